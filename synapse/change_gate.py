"""Background work waits while a change is on its way to HAProxy (issue 15, loaded p99).

A change's path from its watch event to HAProxy's answer takes several turns of the
event loop (the report, the round, the read of its backend, the runtime commands), and
at each one a background step that is ready runs first: at 1,000 services x 20 servers
a sweep's part (its parsing, its merge and plan), the server-state dump's steps and an
owed render are 1-5 ms of CPU each, so a change waited behind several of them. With the
gate a background step waits (``turn``) from the moment a report arrives (``change``)
until the round that takes it in has ended (``done``): a change waits for at most the
one step already running. The sweep right after a start or reload waits too, in smaller
parts, and longer in all (``RunningView.sweep_wait``): until it has read every backend a
change reads the unread backends it touches first, so it must not wait long, but with
25-backend parts that did not wait, a stream of changes after a start kept meeting its
4-5 ms steps (with 50 ms in all, one job's wait was spent within the first few changes).

A stream of changes must not starve the background (the dump keeps the state file
fresh, the sweep corrects drift), nor stretch it: a stream keeps the gate busy between
rounds, and a whole dump at 1,000 backends (167 steps) waiting MAX_WAIT a step took 8 s
longer. So one job (a dump round, a sweep: ``job``) waits MAX_WAIT at most in all, then
runs its remaining steps without waiting.

The cycle collector is held off a round the same way (``collector_held``): at 1,000 x 20
a young collection costs ~1 ms of CPU and a middle one ~3 ms (gc.callbacks, the loaded
propagation scenario), and one fell inside a change every few dozen changes. During a
round the collector is off (reference counting still frees everything that is not a
cycle); the collection that was due runs at the first allocation after it. The whole
round: a reload it runs (validation, swap, HAProxy's answer) too.

A ZooKeeper event names a child but carries no data: the report comes only after the
child's read (a round trip, 1-2 ms), and background steps that began meanwhile (a
sweep's part, a dump step: 1-5 ms each at 1,000 x 20) made the report wait on the loop.
So the watcher says a change is coming at its event (``expect``): background steps wait
from then, until the report's round has ended, or EXPECT_S passed without a report (an
event whose read found nothing new reports nothing).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Callable, Iterator

MAX_WAIT = 0.05  # seconds a background step waits for a change at most
EXPECT_S = 0.025  # an expected change's report comes within this, or no longer counts


class ChangeGate:
    def __init__(self) -> None:
        self._idle = asyncio.Event()
        self._idle.set()
        self._round = False  # a reported change waits for (or is in) a round
        self._expecting: asyncio.TimerHandle | None = None  # ``expect``'s expiry
        self._expected = 0  # events whose report is still to come (until the expiry)
        self.waits = 0  # background steps that waited for a change (for tests, /status)
        self.reported = 0  # reports so far (a slow reload hands its round back on a new one)
        self.on_report: Callable[[], None] | None = None  # told at each (``reload_window``)

    @property
    def busy(self) -> bool:
        return not self._idle.is_set()

    def expect(self) -> None:
        """A watch event named a change whose report is still to come (its data is being
        read): background steps wait from now on, until every expected report came, or
        EXPECT_S after the last event (a read that found nothing new reports nothing)."""
        if self._expecting is not None:
            self._expecting.cancel()
        self._expecting = asyncio.get_running_loop().call_later(EXPECT_S, self._expired)
        self._expected += 1
        self._idle.clear()

    def _expired(self) -> None:
        self._expecting, self._expected = None, 0
        if not self._round:
            self._idle.set()

    def change(self) -> None:
        """A change arrived (a report): background steps wait from now on. It settles
        one expected report (another service's, still being read, keeps its hold)."""
        if self._expected:
            self._expected -= 1
            if not self._expected and self._expecting is not None:  # (all came)
                self._expecting.cancel()
                self._expecting = None
        self._round = True
        self._idle.clear()
        self.reported += 1
        if self.on_report is not None:
            self.on_report()

    def done(self) -> None:
        """No reported change waits for a round any more (one expected still holds)."""
        self._round = False
        if self._expecting is None:
            self._idle.set()

    async def turn(self, limit: float = MAX_WAIT) -> None:
        """Before a background step: at once when no change is on its way (no turn of the
        loop spent), else when it has been handed over, or after ``limit`` seconds."""
        if self._idle.is_set():
            return
        self.waits += 1
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(limit):
                await self._idle.wait()

    def job(self, limit: float | None = None) -> JobTurns:
        """The turns of one background job: ``limit`` (None: MAX_WAIT) for all of its
        steps together."""
        return JobTurns(self, MAX_WAIT if limit is None else limit)


class JobTurns:
    """``await turns()`` before each step of one job; once the job has waited MAX_WAIT
    in all, its steps go on at once (a stream of changes keeps the gate busy)."""

    def __init__(self, gate: ChangeGate, limit: float | None = None) -> None:
        self._gate = gate
        self.left = MAX_WAIT if limit is None else limit

    async def __call__(self) -> None:
        if not self._gate.busy or self.left <= 0:
            return
        began = time.monotonic()
        await self._gate.turn(self.left)
        self.left -= time.monotonic() - began


@contextlib.contextmanager
def collector_held() -> Iterator[None]:
    """Around a round: no cycle collection inside it. A collector someone else turned off
    (``gc_start`` around the first hand-over) is left as it is."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
