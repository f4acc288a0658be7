"""Airbnb's ``zookeeper_dns``: ZooKeeper names the servers, DNS gives their addresses.

The ZooKeeper part is the ``zookeeper`` watcher unchanged; what it would report goes
through a resolver first: a record whose host is a DNS name becomes one server per
address that name resolves to (name and port from the record), re-resolved every
``check_interval`` seconds (default 30, as the ``dns`` watcher) and whenever
ZooKeeper changes. A name that fails to resolve keeps its last known addresses.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging

from smartstack.record import InvalidRecord
from smartstack.registry_address import is_ip_address
from smartstack.tasks import cancel_and_wait, wait_event
from synapse.model import Found
from synapse.watchers.dns import DEFAULT_CHECK_INTERVAL, keep_resolution, resolve
from synapse.watchers.zookeeper import ZooKeeperWatcher

log = logging.getLogger("synapse.watchers.zookeeper_dns")


class ZooKeeperDnsWatcher(ZooKeeperWatcher):
    method = "zookeeper_dns"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._zk_view: tuple[tuple[Found, ...], int, float] | None = None
        self._addresses: dict[str, list[str]] = {}  # DNS name -> last resolved addresses
        self._failing: set[str] = set()
        self._zk_changed = asyncio.Event()

    def report(
        self,
        found: list[Found] | tuple[Found, ...],
        skipped: int,
        event_time: float,
        partial: bool = False,  # (never: one registry)
    ) -> None:
        # The ZooKeeper part's view: kept, resolved by _resolve_loop before it is reported.
        self._zk_view = (tuple(found), skipped, event_time)
        self._zk_changed.set()

    async def run(self) -> None:
        resolver = self.ctx.loop.create_task(self._resolve_loop(), name=f"zk-dns-{self.service}")
        try:
            await super().run()
        finally:
            await cancel_and_wait(resolver)

    async def _resolve_loop(self) -> None:
        interval = self.discovery.check_interval or DEFAULT_CHECK_INTERVAL
        while True:
            await wait_event(self._zk_changed, interval)
            self._zk_changed.clear()
            if self._zk_view is not None:
                await self._resolve_and_report(*self._zk_view)

    async def _resolve_and_report(
        self, found: tuple[Found, ...], skipped: int, event_time: float
    ) -> None:
        names = sorted(
            {f.registration.host for f in found if not is_ip_address(f.registration.host)}
        )
        results = await asyncio.gather(*(resolve(self.ctx.loop, name) for name in names))
        for name, result in zip(names, results, strict=True):
            keep_resolution(result, name, self._addresses, self._failing, host=name,
                            service=self.service, logger=log)  # fmt: skip
        for gone in set(self._addresses) - set(names):
            del self._addresses[gone]
        resolved: list[Found] = []
        for item in found:
            reg = item.registration
            if is_ip_address(reg.host):
                resolved.append(item)
                continue
            for address in self._addresses.get(reg.host, []):
                try:
                    resolved.append(
                        Found(dataclasses.replace(reg, host=address), item.origin, item.sequence)
                    )
                except InvalidRecord:  # e.g. a scoped IPv6 address: not usable in HAProxy
                    continue
        super().report(resolved, skipped, event_time)
