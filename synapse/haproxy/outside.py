"""Noticing within a second that another HAProxy process answers: an outside reload.

An operator's `systemctl reload`, a certbot hook, a SIGUSR2 to the master, an init
system's restart: the new worker starts from the config file and the server-state file,
which may say less than what synapse applied at runtime since (an edited-out server, a
stale state file: a server that came back restored into maintenance). Only the background
sweep noticed, up to FULL_READ_INTERVAL (30 s) later, and a backend had no serving server
that long (issue s23 F3: 20 s of 503s).

Every WATCH_INTERVAL this asks `show info` on the connection it shares with the state
dumper (``SharedClient``; managed mode: kept between looks
, ``RuntimeClient.ask_kept``: one held by an old, stopping worker is replaced, so the look
reaches the process serving now and keeps no old worker alive; Airbnb mode: closed after each
look, the operator's socket is not held). A pid other than the one
the view was read from, when nothing of synapse's own (a reload, a start, a whole read)
refreshed the view meanwhile, has the view read whole and planned at once, under the
controller's lock. Cost: one `show info` a second (measured idle in
docs/synapse-haproxy.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass

from smartstack.logs import event
from smartstack.tasks import cancel_and_wait
from synapse.haproxy.answers import parse_pid
from synapse.haproxy.runtime import RuntimeClient
from synapse.haproxy.sockets import HAProxySocketError
from synapse.haproxy.view import RunningView

log = logging.getLogger("synapse.haproxy")
WATCH_INTERVAL = 1.0  # seconds between looks


class SharedClient(RuntimeClient):
    """The one connection the background looks share: this watch's and the state dumper's
    (``statedump.state_dumper``). Their batches take turns on it. Each had a kept connection
    of its own, and in Airbnb mode both held the operator's admin socket all the time:
    with HAProxy's default `stats maxconn` (10) and 8 monitoring clients, synapse's changes
    waited 9-16 s for a connection. ``keep_idle`` 0 (Airbnb mode) closes it after each
    look, as the release before them did between its reads."""

    def __init__(self, path: str, timeout: float, keep_idle: float) -> None:
        super().__init__(path, timeout, keep_idle=keep_idle)
        self._turn = asyncio.Lock()
        self._owner: asyncio.Task[object] | None = None

    @contextlib.asynccontextmanager
    async def _turn_taken(self) -> AsyncIterator[None]:
        async with self._turn:
            self._owner = asyncio.current_task()
            try:
                yield
            finally:
                self._owner = None

    async def ask(self, commands: Sequence[str]) -> list[str]:
        async with self._turn_taken():
            return await super().ask(commands)

    async def ask_kept(self, commands: Sequence[str]) -> list[str]:
        async with self._turn_taken():
            return await super().ask_kept(commands)

    async def release(self) -> None:
        if self._owner is not None and self._owner is asyncio.current_task():
            return await super().release()  # (from within a batch: ``held``)
        async with self._turn:  # (not under the other's batch)
            await super().release()


@dataclass
class SweepHooks:
    """What the controller lends the sweep (``RunningReader.start_sweeping``) and this watch:
    its lock, "has a desired state" and apply. ``owner_alive``: managed mode, whether the
    master synapse runs or adopted lives; once it died, the new process that answers is the
    supervisor's to start or adopt (a container's HAProxy started again at once answered
    this look first: CI, round 32)."""

    lock: asyncio.Lock | None = None
    ready: Callable[[], bool] = lambda: False
    apply: Callable[[], Awaitable[object]] | None = None
    owner_alive: Callable[[], bool] = lambda: True


class OutsideWatch:
    """Looks for another HAProxy process behind the view (see the module docstring)."""

    def __init__(self, client: RuntimeClient, view: RunningView) -> None:
        self.client, self.view = client, view
        self.noticed = 0  # outside reloads or restarts noticed: for tests and /status
        self._task: asyncio.Task[None] | None = None
        self.hooks = SweepHooks()

    def start(self, hooks: SweepHooks) -> None:
        """``hooks``: the controller's, as the sweep has them."""
        self.hooks = hooks
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)
        await self.release()

    async def release(self) -> None:
        """Close the kept connection (after synapse's own reload: it reaches the old worker)."""
        await self.client.release()

    async def look(self) -> bool:
        """One look; True when another process answered and the controller applied."""
        view, lock = self.view, self.hooks.lock
        if lock is None or lock.locked() or not self._may_look():
            return False  # (an apply runs, or the next one reads whole anyway)
        since = view.counter
        try:
            answers = await self.client.ask_kept(["show info"])
            pid = parse_pid(self.client.path, answers[0]) if answers else None
        except HAProxySocketError:
            return False  # down or silent: the applies, the sweep and /health see to it
        if pid is None or pid == view.pid:
            return False
        async with lock:
            # synapse's own reload, start or whole read since the look: the view knows.
            if view.refreshed_since(since) or not self._may_look():
                return False
            event(log, "haproxy_outside_reload", level=logging.WARNING, pid=pid, was=view.pid,
                  detail="another HAProxy process answers: read whole and planned now")  # fmt: skip
            self.noticed += 1
            view.invalidate()
            if self.hooks.apply is not None:
                await self.hooks.apply()
        return True

    def _may_look(self) -> bool:
        return self.view.valid and self.hooks.ready() and self.hooks.owner_alive()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(WATCH_INTERVAL)
            try:
                await self.look()
            except Exception:  # a bug must not end the watch
                log.exception("HAProxy outside-reload watch failed")
