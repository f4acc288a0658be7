"""When nerve's event loop did not run: the freeze itself (SIGSTOP, a VM pause, `docker
pause`, a GC or swap stall), not guessed from how old a verdict is.

A verdict's age says nothing about a freeze when rounds are far apart (``check_interval:
60`` against a 10 s session): judging by it held a healthy registration back a whole round
after an ordinary registry outage (review s32). A tick every TICK_S on the loop notes each
gap between ticks of at least RECORDED_S; a lost registration asks whether a gap long
enough to have cost it (``nerve/freshness.py`` LOSS_SHARE of the session or lease) ended
after the verdict's round began.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass

from nerve.cadence import WAKE

TICK_S = 0.25  # a wake-up doing nothing but read the clock: cheap beside any check
RECORDED_S = 0.5  # gaps shorter than this cost no session (ZooKeeper's least is ~1 s)
KEPT = 64  # the newest gaps: a verdict is at most a round old


@dataclass(frozen=True)
class Silence:
    end: float  # monotonic: the first tick after it
    length: float  # seconds between that tick and the one before (the freeze, or more)


class SilenceWatch:
    def __init__(self) -> None:
        self.last: float | None = None
        self.silences: deque[Silence] = deque(maxlen=KEPT)

    def tick(self, now: float) -> None:
        if self.last is not None and now - self.last >= RECORDED_S:
            self.silences.append(Silence(now, now - self.last))
        self.last = now

    def after(self, since: float, at_least: float) -> Silence | None:
        """The newest silence of ``at_least`` seconds or more that ended after ``since``."""
        for silence in reversed(self.silences):
            if silence.end > since and silence.length >= at_least:
                return silence
        return None

    async def run(self) -> None:
        while True:
            now = time.monotonic()
            if self.last is not None:  # a wake seen here too: no round may be sleeping
                WAKE.note(self.last + TICK_S, now)
            self.tick(now)
            await asyncio.sleep(TICK_S)


SILENCE = SilenceWatch()  # one per process: the loop is the process's
