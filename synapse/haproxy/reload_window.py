"""While HAProxy reloads, changes of servers go in beside the reload (the window).

The slow parts of a reload are the config check and HAProxy's own part: the reload
command (Airbnb) or the master's reload (managed), then the wait for the new worker, up
to ``reload_timeout`` each (a hung command, a stopped or CPU-starved master). They ran
under the controller's lock, so a change that came meanwhile waited for all of it: a
server withdrawn with its instance stopped stayed in HAProxy 10-20 s (failed requests).

So the reloading apply opens the window around those parts (``opened``). A change's apply
(``HAProxyController.apply``, one at a time: ``turn``) that finds it open, or waits for the
lock when it opens, goes in beside the reload: its desired state becomes the controller's,
its servers are planned against the bridge of the file HAProxy ran before this reload and
sent to whichever worker answers, and the server-state file is dumped again, so a new
worker that has not started yet starts with them. It writes no config file and starts no
reload. The sweep, the dumper, a restart, another reload still wait for the lock.

Once the reload is over (done, failed or refused), the reloading apply applies the latest
desired state, the window's own, before the lock goes to anyone else: the new worker, or
the old one and the file, get today's servers; the reloading apply's older desired state
is never planned again.

The reconciler hands one desired state at a time, so a round whose apply reloads hands
back (``hand_back``, PENDING) as soon as the window is open and a newer change was
reported: the next round goes in beside the reload. The reload goes on in its task; its
exception, if any, is handed to ``failed`` (logged, counted, retried); a stop cancels it,
and any reload under way (``cancel``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass

from smartstack.tasks import cancel_and_wait
from synapse.change_gate import ChangeGate
from synapse.contract import ApplyOutcome, ApplyResult
from synapse.haproxy.bridge import Layout
from synapse.haproxy.configtext import ParsedConfig
from synapse.haproxy.ops import Op, SetState
from synapse.haproxy.running import OP_STOPPED, RunningServer
from synapse.model import DesiredService


@dataclass
class UnderWay:
    """One reload under way: what HAProxy ran before it, and whether a change went in."""

    layout: Layout | None  # what the file before the reload was rendered from
    before: ParsedConfig | None  # that file
    task: asyncio.Task[object] | None  # the reloading apply's
    changed: bool = False  # a change went in beside it: the latest state is applied after


class ReloadWindow:
    def __init__(self, lock: asyncio.Lock, failed: Callable[[BaseException], None]) -> None:
        self._lock = lock  # the controller's: the reloading apply holds it throughout
        self._failed = failed  # a handed-back reload raised
        self._turn = asyncio.Lock()  # one change at a time beside the reload
        self._open = asyncio.Event()  # set while the window is open
        self._news: asyncio.Future[None] | None = None  # ``poke``: the window opened, a report
        self.reload: UnderWay | None = None
        self._behind: set[asyncio.Task[ApplyResult]] = set()  # reloads handed back

    def begin(self, layout: Layout | None, before: ParsedConfig | None) -> UnderWay:
        """A reload from the file ``layout`` rendered (``before``) begins."""
        self.reload = UnderWay(layout, before, asyncio.current_task())
        return self.reload

    def end(self) -> bool:
        """The reload is over: whether a change went in beside it."""
        reload, self.reload = self.reload, None
        return reload is not None and reload.changed

    def poke(self) -> None:
        """Something ``hand_back`` looks at changed (a report, the window opened)."""
        news, self._news = self._news, None
        if news is not None and not news.done():
            news.set_result(None)

    @contextlib.asynccontextmanager
    async def opened(self) -> AsyncIterator[None]:
        """Around a slow part of the reload ``begin`` began (none: nothing opens)."""
        if self.reload is None:
            yield
            return
        self._open.set()
        self.poke()
        try:
            yield
        finally:
            self._open.clear()  # none begins from now on (they wait for the lock)
            async with self._turn:  # the change beside it ends first
                pass

    @contextlib.asynccontextmanager
    async def turn(
        self, counted: Callable[[], contextlib.AbstractContextManager[None]]
    ) -> AsyncIterator[UnderWay | None]:
        """A change's turn: the controller's lock (None), or beside the open window's reload
        (it); ``counted`` while it waits (the sweep lets waiting changes go first)."""
        with counted():
            reload = await self._lock_or_window()
        try:
            yield reload
        finally:
            (self._lock if reload is None else self._turn).release()

    async def _lock_or_window(self) -> UnderWay | None:
        while True:
            if self._open.is_set():
                await self._turn.acquire()
                if self._open.is_set():
                    return self.reload
                self._turn.release()  # (it closed meanwhile: the lock, after the reload)
            if await self._lock_first():
                return None

    async def _lock_first(self) -> bool:
        """Whether the lock came (held now) before the window opened."""
        acquiring = asyncio.ensure_future(self._lock.acquire())
        opening = asyncio.ensure_future(self._open.wait())
        try:
            await asyncio.wait((acquiring, opening), return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # (cancelled: the lock, if it came after all, given back)
            self._drop(acquiring, opening)
            raise
        if acquiring.done():
            opening.cancel()
            return True
        self._drop(acquiring, opening)
        return False

    def _drop(self, acquiring: asyncio.Future[bool], opening: asyncio.Future[bool]) -> None:
        opening.cancel()
        acquiring.cancel()
        acquiring.add_done_callback(self._give_back)

    def _give_back(self, acquiring: asyncio.Future[bool]) -> None:
        if not acquiring.cancelled() and acquiring.exception() is None:
            self._lock.release()

    async def hand_back(
        self, task: asyncio.Task[ApplyResult], gate: ChangeGate, seen: int
    ) -> ApplyResult:
        """A change's apply (``task``, begun when ``gate`` had ``seen`` reports): its result,
        or PENDING as soon as it reloads with the window open and a newer change was
        reported (the reload goes on: ``cancel`` at a stop)."""
        try:
            while not task.done():
                reload = self.reload
                ours = self._open.is_set() and reload is not None and reload.task is task
                if ours and gate.reported > seen:
                    self._behind.add(task)
                    task.add_done_callback(self._handed_back_ended)
                    return ApplyResult(reload=ApplyOutcome.PENDING)
                if self._news is None:  # (one future for every waiting apply: no task each)
                    self._news = asyncio.get_running_loop().create_future()
                await asyncio.wait((task, self._news), return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            await cancel_and_wait(task)  # (as when it was awaited: unwound before this ends)
            raise
        return task.result()

    def _handed_back_ended(self, task: asyncio.Task[ApplyResult]) -> None:
        self._behind.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            self._failed(error)

    async def cancel(self) -> None:
        """Cancel the reloads handed back and the one under way, whoever runs it (the pending
        retry, the sweep, an owed render hold the lock for it): a stop, which then waits for
        the lock, must not wait for a hung reload (its command is killed, the file put back)."""
        for task in list(self._behind):
            await cancel_and_wait(task)
        task = self.reload.task if self.reload is not None else None
        if task is not asyncio.current_task():
            await cancel_and_wait(task)


def merged(first: ApplyResult, then: ApplyResult) -> ApplyResult:
    """A reload's result, then the apply of the latest desired state after it: the latter's
    outcome when the reload's candidate was refused (the refusal is about an older desired
    state), or when the reload went through and the latest state still needs one."""
    done = first.reload in (ApplyOutcome.DONE, ApplyOutcome.NONE)
    refused = first.reload is ApplyOutcome.INVALID
    replaced = refused or (done and then.reload is not ApplyOutcome.NONE)
    return dataclasses.replace(
        first,
        ops=first.ops + then.ops,
        reload=then.reload if replaced else first.reload,
        reasons=first.reasons + then.reasons,
        config_written=first.config_written or then.config_written,
        error=then.error if refused else first.error or then.error,
    )


def leaving(
    desired: Sequence[DesiredService], backends: Mapping[str, Mapping[str, RunningServer]]
) -> list[Op]:
    """Beside a reload when no bridge reaches ``desired`` at runtime: the servers that left
    a backend go into maintenance (what a reload is not needed for), unless no server the
    backend keeps would still serve (a backend in maintenance serves nothing)."""
    ops: list[Op] = []
    for service in desired:
        running = backends.get(service.backend_name) or {}
        names = {server.name for server in service.servers}
        where = {(server.host, server.port) for server in service.servers}
        kept = {s.name for s in running.values() if s.name in names or (s.addr, s.port) in where}
        gone = [s.name for s in running.values() if s.name not in kept and not s.in_maint]
        serving = [s for s in running.values() if s.name in kept and not s.in_maint]
        if gone and any(s.op_state != OP_STOPPED for s in serving):
            ops += [SetState(service.backend_name, name, "maint") for name in gone]
    return ops
