"""DNS watcher: resolve each of ``discovery.servers`` every ``check_interval`` seconds.

Every address a name resolves to becomes one server (Airbnb's dns watcher: the
server's ``name`` and ``port`` with the resolved address as host). Resolution
uses the system resolver through asyncio's getaddrinfo (a thread, never the
loop); Airbnb's ``nameserver`` key is therefore not honoured (logged once). A
name that fails to resolve keeps its last known addresses.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from typing import TypeVar

from smartstack.logs import event
from smartstack.record import InvalidRecord, Registration
from synapse.discovery_config import ServerEntry
from synapse.model import Found
from synapse.watchers.base import Watcher

log = logging.getLogger("synapse.watchers.dns")

K = TypeVar("K")  # what names a resolution: a server index, a host name

DEFAULT_CHECK_INTERVAL = 30.0  # Airbnb's dns watcher default
RESOLVE_TIMEOUT = 10.0


async def resolve(loop: asyncio.AbstractEventLoop, host: str) -> list[str] | str:
    """The sorted addresses of ``host`` (system resolver, in a thread), or the error text."""
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(host, None, type=socket.SOCK_STREAM), RESOLVE_TIMEOUT
        )
    except (OSError, TimeoutError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return sorted({str(info[4][0]) for info in infos})


def keep_resolution(
    result: list[str] | str,
    key: K,
    addresses: dict[K, list[str]],
    failing: set[K],
    *,
    host: str,
    service: str,
    logger: logging.Logger,
) -> None:
    """Keep one name's resolution: its addresses, or a failure (logged once per streak; the
    name keeps its last addresses, so a resolver hiccup does not empty the service)."""
    if isinstance(result, list):
        addresses[key] = result
        failing.discard(key)
    elif key not in failing:
        failing.add(key)
        event(logger, "dns_resolve_failed", level=logging.WARNING, service=service, host=host,
              error=result)  # fmt: skip


class DnsWatcher(Watcher):
    method = "dns"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._addresses: dict[int, list[str]] = {}  # server index -> last resolved addresses
        self._failing: set[int] = set()
        self._entries = self._usable_entries()

    def _usable_entries(self) -> list[tuple[int, ServerEntry, int]]:
        """Servers with a port and a valid name; the others are logged once and skipped."""
        usable = []
        for index, entry in enumerate(self.discovery.servers or []):
            port = entry.port or self.config.backend_port_override
            try:
                if port is None:
                    raise InvalidRecord("no port (give host:port or backend_port_override)")
                Registration(host="127.0.0.1", port=port, name=entry.name or entry.host)
            except InvalidRecord as exc:
                self.bad_record(f"dns:{entry.host}", exc.reason)
                continue
            usable.append((index, entry, port))
        return usable

    async def run(self) -> None:
        if self.discovery.nameserver:
            event(log, "dns_nameserver_ignored", level=logging.WARNING, service=self.service,
                  nameserver=self.discovery.nameserver)  # fmt: skip
        interval = self.discovery.check_interval or DEFAULT_CHECK_INTERVAL
        while True:
            await self.poll()
            await asyncio.sleep(interval)

    async def poll(self) -> None:
        started = time.monotonic()
        entries = self._entries
        results = await asyncio.gather(*(self._resolve(e) for _, e, _ in entries))
        self.count_event()
        for (index, entry, _), result in zip(entries, results, strict=True):
            keep_resolution(result, index, self._addresses, self._failing, host=entry.host,
                            service=self.service, logger=log)  # fmt: skip
        self.set_connected(len(self._failing) < len(entries) or not entries)
        self.report(self._found(entries), 0, started)

    async def _resolve(self, entry: ServerEntry) -> list[str] | str:
        return await resolve(self.ctx.loop, entry.host)

    def _found(self, entries: list[tuple[int, ServerEntry, int]]) -> list[Found]:
        found = []
        for index, entry, port in entries:
            for address in self._addresses.get(index, []):
                try:
                    reg = Registration(host=address, port=port, name=entry.name or entry.host)
                except InvalidRecord:  # e.g. a scoped IPv6 address: not usable in HAProxy
                    continue
                found.append(Found(reg, f"dns:{entry.host}"))
        return found
