"""While a reload waits for HAProxy, changes of servers go in beside it (the window).

The slow part of a reload is HAProxy's: the reload command (Airbnb) or the master's
reload (managed), then the wait for the new worker, up to ``reload_timeout`` each. It ran
under the controller's lock, so a change that came meanwhile waited for it: a server
withdrawn with its backend stopped stayed in HAProxy 10-20 s while a reload command hung
(failed requests), and again at every retry. So the reloading apply opens a window
around that part (``opened``, by the installer) and a change's apply (the reconciler's,
``HAProxyController.apply``; not the sweep's, a pending reload's or a restart's: they
still wait for the lock) goes in beside it (``turn``), one at a time. It does only what
is right whichever process answers: today's servers planned against the bridge (the
structure of the file HAProxy ran before this reload), the commands sent (``apply``). It
writes no file (HAProxy reads the candidate now), syncs no route map file, starts no
reload. What it did is handed to the reloading apply (``take``):

the reloading apply applies the last change's desired state again as soon as the reload
is over, as any apply (``_apply_locked``), before the lock goes to anyone else:

- reloaded: the new worker started from the candidate and the server states dumped
  before the window, without the window's changes: they are planned against it now (a
  structural change that came meanwhile goes the usual way: the reload gate);
- failed: the old worker still serves, with the window's commands; the file written then
  (the bridge) says so, and the retry reloads the latest desired state.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass

from smartstack.tasks import cancel_and_wait
from synapse.change_gate import ChangeGate
from synapse.contract import ApplyOutcome, ApplyResult
from synapse.haproxy.bridge import Layout, build_bridge
from synapse.haproxy.configtext import ParsedConfig
from synapse.haproxy.ops import Op
from synapse.haproxy.reader import RunningReader
from synapse.haproxy.running import Capabilities
from synapse.model import DesiredService

RunOps = Callable[[Sequence[Op], bool], Awaitable[tuple[list[str], list[str]]]]  # (ops, ack)
LOOK_S = 0.1  # how often a change's apply that takes long looks whether to hand back


@dataclass
class Opened:
    """One window: what HAProxy ran before the reload, and what the window's changes did."""

    layout: Layout | None  # what the file before the reload was rendered from
    before: ParsedConfig | None  # that file
    changes: int = 0  # changes applied in the window
    desired: list[DesiredService] | None = None  # the last one's desired state


class ReloadWindow:
    def __init__(
        self,
        lock: asyncio.Lock,
        reader: RunningReader,
        caps: Callable[[], Capabilities],
        run: RunOps,
    ) -> None:
        self._lock = lock  # the controller's: the reloading apply holds it throughout
        self._reader, self._caps, self._run = reader, caps, run
        self._turn = asyncio.Lock()  # one change at a time in the window
        self._waiting: set[asyncio.Task[object]] = set()  # changes waiting for the lock
        self._woken: set[asyncio.Task[object]] = set()  # of those, the ones a window woke
        self._next: Opened | None = None  # ``prepare``d for the reload about to run
        self.current: Opened | None = None
        self._done: Opened | None = None  # the last window, until ``take``n
        self._reloading: asyncio.Task[object] | None = None  # the task whose reload it is
        self._behind: set[asyncio.Task[ApplyResult]] = set()  # reloads handed back: going on

    def prepare(self, layout: Layout | None, before: ParsedConfig | None) -> None:
        """The reload about to run replaces the file ``layout`` rendered (``before``)."""
        self._next = Opened(layout, before)

    @contextlib.asynccontextmanager
    async def opened(self) -> AsyncIterator[None]:
        """Around the slow part of the ``prepare``d reload (the installer's)."""
        window, self._next = self._next, None
        if window is None:  # (a start: nothing serves, no change could go anywhere)
            yield
            return
        self.current, self._reloading = window, asyncio.current_task()
        for task in self._waiting - self._woken:  # (they wait for the lock held here)
            self._woken.add(task)
            task.cancel()
        try:
            yield
        finally:
            async with self._turn:  # the change in it ends first; none begins after
                self.current = self._reloading = None
                if window.changes:  # (else one taken in an earlier window still waits)
                    self._done = window

    def take(self) -> list[DesiredService] | None:
        """The desired state of the last change that went in a window, once: the reloading
        apply applies it as soon as the reload is over (``merged``)."""
        done, self._done, self._next = self._done, None, None
        return done.desired if done is not None else None

    async def hand_back(self, task: asyncio.Task[ApplyResult], gate: ChangeGate) -> ApplyResult:
        """A change's apply (``task``): its result, or PENDING as soon as it waits in its
        own reload's window and a newer change was reported: the reconciler's next round
        goes in beside the reload (it waited for the whole reload before, 10 s when its
        command hung, as a round applies one desired state at a time). The reload goes on
        (``cancel``: at a stop)."""
        seen = gate.reported
        try:
            while not task.done():
                await asyncio.wait((task,), timeout=LOOK_S)
                if task is self._reloading and gate.reported > seen and not task.done():
                    self._behind.add(task)
                    task.add_done_callback(self._behind.discard)
                    return ApplyResult(reload=ApplyOutcome.PENDING)
        except asyncio.CancelledError:
            task.cancel()
            raise
        return task.result()

    async def cancel(self) -> None:
        """Cancel the reloads handed back (a stop), and wait for them."""
        for task in list(self._behind):
            await cancel_and_wait(task)

    @contextlib.asynccontextmanager
    async def turn(self, counted: Callable[[], contextlib.AbstractContextManager[None]]) -> (
        AsyncIterator[Opened | None]
    ):  # fmt: skip
        """A change's turn: the controller's lock (None), or in an open window (it);
        ``counted`` while it waits (the sweep lets waiting changes go first)."""
        while True:
            with counted():
                window = await self._lock_or_window()
                if window is not None:
                    await self._turn.acquire()
            if window is None:
                try:
                    yield None
                finally:
                    self._lock.release()
                return
            try:
                if self.current is window:
                    yield window
                    return
            finally:
                self._turn.release()
            # (the window closed while this change waited: the lock, after the reload)

    async def _lock_or_window(self) -> Opened | None:
        """Whichever comes first: the lock (None: held now), or an open window (``opened``
        wakes the changes waiting for the lock: their place in its queue was kept)."""
        task = asyncio.current_task()
        assert task is not None
        while (window := self.current) is None:
            self._waiting.add(task)
            try:
                await self._lock.acquire()
                return None
            except asyncio.CancelledError:
                if task not in self._woken or task.uncancel():
                    raise  # (cancelled for real)
            finally:
                self._waiting.discard(task)
                self._woken.discard(task)
        return window

    async def apply(self, window: Opened, desired: list[DesiredService]) -> ApplyResult:
        """A change's apply in ``window``: its servers at runtime, against the bridge (the
        reloading apply applies ``desired`` again once the reload is over)."""
        window.changes, window.desired = window.changes + 1, desired
        reader = self._reader
        running = await reader.read(reader.stale(), ())
        if window.before is None or running.backends is None:
            return ApplyResult(reload=ApplyOutcome.PENDING)  # (the reload plans it)
        running = dataclasses.replace(running, config=window.before)  # (what the file was)
        ids = reader.id_hints(running)
        bridge = build_bridge(window.layout, desired, running, ids, self._caps())
        if bridge is None:  # (a server only a reload brings: the reload plans it)
            return ApplyResult(reload=ApplyOutcome.PENDING)
        applied, failures = await self._run(bridge.ops, False)  # (its own trace: ``acked``)
        acked = time.monotonic() if applied and not failures else None  # (the trace's)
        error = "; ".join(failures) or None  # (planned again once the reload is over)
        return ApplyResult(tuple(applied), ApplyOutcome.PENDING, (), False, error, acked)


def merged(first: ApplyResult, then: ApplyResult) -> ApplyResult:
    """A reloading apply's result, and the one of the changes that came during the reload."""
    return dataclasses.replace(
        first,
        ops=first.ops + then.ops,
        config_written=first.config_written or then.config_written,
        error=first.error or then.error,
    )
