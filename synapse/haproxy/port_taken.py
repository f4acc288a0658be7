"""A service whose frontend port another process listens on is left out, not everyone.

So is one whose bind address is not on this host (``not_here``): both are ``Clash``es.

HAProxy binds with SO_REUSEPORT, so a managed HAProxy must not load a ``bind`` on a port
another process listens on (``ports``). That check used to refuse the whole config: the
first start never happened (every service refused connections) and, once such a service
was added by a SIGHUP, every later reload failed. Now, when the start or reload refuses
the candidate for that (``managed.PortsTaken``, after any adoption: a master synapse
adopts is its own), ``PortWait.refusal`` (the installer's) reports the clashing ``bind``
lines that lie in services' sections as ``haproxy -c`` names a line (``[candidate:line]``),
so per-service isolation (``isolation``) takes those services out (one HAProxy ran keeps
its last good block) and the others are applied. Every PORT_RECHECK_S the ports are looked
at again (the kernel's list of listening sockets, a test bind of the addresses, no
reload); once a service's ports are free and its addresses here its isolation ends and the
last desired state is applied again. A clash outside services' sections (the stats page,
an operator's own lines) stays a failed start or reload, retried with a backoff, as before.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from synapse.atomic import write_atomic
from synapse.haproxy import ports
from synapse.haproxy.isolation import Isolation, culprits
from synapse.haproxy.managed import ManagedHAProxy
from synapse.haproxy.ports import PORT_RECHECK_S
from synapse.model import DesiredService

log = logging.getLogger("synapse.haproxy")


class PortWait:
    """Refuses services' binds on taken ports; tries them again once the ports are free
    (``retry``: the controller's apply of a desired state, called under ``lock``)."""

    def __init__(self, isolation: Isolation, managed: ManagedHAProxy, lock: asyncio.Lock,
                 retry: Callable[[list[DesiredService]], Awaitable[object]]) -> None:  # fmt: skip
        self._isolation, self._managed, self._lock, self._retry = isolation, managed, lock, retry
        self.waiting: dict[str, str] = {}  # service -> its bind lines on taken ports
        self.task: asyncio.Task[None] | None = None

    @classmethod
    def of(
        cls,
        isolation: Isolation,
        managed: ManagedHAProxy | None,
        lock: asyncio.Lock,
        retry: Callable[[list[DesiredService]], Awaitable[object]],
    ) -> PortWait | None:
        """None without a managed HAProxy (synapse does not start or reload it itself)."""
        return cls(isolation, managed, lock, retry) if managed is not None else None

    async def refusal(
        self,
        text: str,
        candidate: Path | None,
        services: Sequence[DesiredService],
        clashes: Sequence[ports.Clash],
    ) -> str | None:
        """The ``clashes`` of config ``text`` (the start or reload refused it) whose binds lie
        in services' sections, one line each as ``haproxy -c`` words an error (None: none);
        the text is written to ``candidate`` (isolation reads it there)."""
        if candidate is None:
            return None
        if not clashes:
            return None
        lines = text.splitlines()
        binds: dict[str, list[str]] = {}
        errors = []
        for number, clash in ports.clash_lines(text, clashes):
            error = f"[ALERT] : [{candidate}:{number}] : {clash.why}: {clash}"
            for name in culprits(error, str(candidate), text, services):
                binds.setdefault(name, []).append(lines[number - 1])
            errors.append(error)
        if not binds:
            return None  # (the start or reload refuses it: retried with a backoff)
        try:
            await asyncio.to_thread(write_atomic, candidate, text)
        except OSError:
            return None
        for name, found in binds.items():
            self.waiting[name] = "\n".join(found)
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._run())
        return "\n".join(errors)

    async def stop(self) -> None:
        task, self.task = self.task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        while self.waiting:  # (ends once no service waits for a port)
            await asyncio.sleep(PORT_RECHECK_S)
            try:
                await self._look()
            except Exception:  # a bug must not end the waiting silently
                log.exception("looking at taken frontend ports failed")

    async def _look(self) -> None:
        freed: list[str] = []
        for name, binds in list(self.waiting.items()):
            if name not in self._isolation.isolated:  # its block changed: tried already
                del self.waiting[name]
            elif not await self._managed.taken(binds):
                freed.append(name)
        if not freed:
            return
        async with self._lock:
            for name in freed:
                if self.waiting.pop(name, None) is not None and name in self._isolation.isolated:
                    self._isolation.end(name, f"{self._freed(name)}: tried again")
            await self._retry(self._isolation.substitute(self._isolation.given))

    def _freed(self, name: str) -> str:
        iso = self._isolation.isolated[name]
        if ports.NOT_HERE in iso.error:
            return "its bind address is on this host now"
        return "its frontend port is free"
