"""This process's own stalls (SIGSTOP, a VM pause, `docker pause`, a long GC or swap stall),
seen from its event loop: one timer a second; a tick that runs much later than it was due
means the whole process stood still.

Why a process wants to know: after a registry outage a fleet's clients must not all act
at the same instant (synapse's ``relist_jitter`` spreads their re-lists), but after a
reconnect caused by this process's *own* stall nobody else is reconnecting: the registry
was fine, only our view of it is old (as old as the stall) and should be renewed at once.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from dataclasses import dataclass

PERIOD = 1.0  # seconds between ticks: one timer a second per process
LATE = 2.0  # a tick later than this: a stall (a busy loop lags less than that)


@dataclass
class StallClock:
    period: float = PERIOD
    late: float = LATE
    gap: float = 0.0  # the last stall's length
    ended_at: float | None = None  # monotonic: when the last stall ended (its tick ran)

    def tick(self, due: float, now: float) -> None:
        """A tick due at ``due`` ran at ``now`` (monotonic)."""
        if now - due > self.late:
            self.gap, self.ended_at = now - due, now

    def stalled_within(self, seconds: float, now: float | None = None) -> float | None:
        """The gap of a stall that ended less than ``seconds`` ago, else None."""
        now = time.monotonic() if now is None else now
        if self.ended_at is None or now - self.ended_at > seconds:
            return None
        return self.gap

    async def run(self) -> None:
        while True:
            due = time.monotonic() + self.period
            await asyncio.sleep(self.period)
            self.tick(due, time.monotonic())


_clocks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[StallClock, asyncio.Task[None]]]
_clocks = weakref.WeakKeyDictionary()


def stall_clock() -> StallClock:
    """The running loop's clock, started on first use (one per process and loop). On
    resume its overdue timer runs in the loop's first pass, before any reconnect a
    registry client makes (that needs the network), so the stall is known by then."""
    loop = asyncio.get_running_loop()
    held = _clocks.get(loop)
    if held is None or held[1].done():
        clock = StallClock()
        held = clock, loop.create_task(clock.run(), name="stall-clock")
        _clocks[loop] = held
    return held[0]
