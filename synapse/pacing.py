"""Pacing the reconciler's rounds while reports stream in.

Each round has a fixed cost (selection, ``desired()``, HAProxy's socket round trips), so
a stream of reports handed over a few at a time costs many rounds for what a handful
could do. The rule, per round:

- a change that finds synapse quiet (fewer than ``STREAM_MIN`` reports arrived while
  the last round ran) is handed over at once: a lone change waits for nothing, nor does
  one that arrives during the tail of the previous change's round (its render after
  HAProxy has the commands: at 1,000 services a few ms);
- in a stream (reports kept arriving while the last round ran), the next round first waits
  about as long as the last round took, capped at ``haproxy.pace_ms``, so each round
  takes a bigger batch; the wait ends early when no report arrived for ``GAP_S`` (the
  stream stopped: its last round does not wait needlessly);
- ``haproxy.coalesce_ms`` keeps its meaning: a fixed window before every round. When it
  is at least the paced wait it is used as before (no early end).

``Pacer`` is pure (the caller passes the clock and the count of reports received); the
reconciler sleeps for what it says.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from synapse.config import HAProxyConfig

GAP_S = 0.001  # in a paced wait, a step without a new report ends the wait
STREAM_MIN = 2  # reports arriving during a round that make a stream


class Pacer:
    """``arrivals()``: the count of reports received so far; ``clock``: monotonic seconds."""

    def __init__(
        self,
        arrivals: Callable[[], int],
        haproxy: HAProxyConfig | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.arrivals, self.clock = arrivals, clock
        self.configure(haproxy)
        self.last_round_s = 0.0
        self.streaming = False  # reports kept arriving while the last round ran
        self.paced = 0  # rounds that waited for a stream
        self._started, self._seen = 0.0, 0

    def configure(self, haproxy: HAProxyConfig | None) -> None:
        """Without HAProxy (file_output only) nothing waits."""
        self.pace_s = haproxy.pace_ms / 1000 if haproxy else 0.0  # the adaptive wait's cap
        self.coalesce_s = haproxy.coalesce_ms / 1000 if haproxy else 0.0  # a fixed window

    def round_ended(self) -> None:
        self.last_round_s = self.clock() - self._started
        self.streaming = self.arrivals() - self._seen >= STREAM_MIN

    def failed(self) -> None:
        """A failed round is retried after its backoff: no wait on top of that."""
        self.streaming = False

    def window(self) -> tuple[float, bool]:
        """(seconds to wait at most before the next round, whether a quiet gap ends it)."""
        paced = min(self.last_round_s, self.pace_s) if self.streaming else 0.0
        if paced > self.coalesce_s:
            return paced, True
        return self.coalesce_s, False

    @staticmethod
    def next_sleep(now: float, deadline: float, gap_ends: bool, quiet: bool) -> float:
        """How long to sleep next in a wait until ``deadline``; 0 when it is over.
        ``quiet``: no report arrived during the previous step."""
        left = deadline - now
        if left <= 0 or (gap_ends and quiet):
            return 0.0
        return min(left, GAP_S) if gap_ends else left

    async def wait(self) -> None:
        """Wait before a round as the rules above say; the round starts when it returns."""
        window, gap_ends = self.window()
        if window > 0:
            self.paced += gap_ends
            deadline = self.clock() + window
            seen, quiet = self.arrivals(), False
            while (step := self.next_sleep(self.clock(), deadline, gap_ends, quiet)) > 0:
                await asyncio.sleep(step)
                now_seen = self.arrivals()
                quiet, seen = now_seen == seen, now_seen
        self._started, self._seen = self.clock(), self.arrivals()
