"""Pacing the reconciler's rounds while reports stream in.

Each round has a fixed cost (selection, ``desired()``, HAProxy's socket round trips), so
a stream of reports handed over a few at a time costs many rounds for what a handful
could do. The rule, per round:

- a *stream* is a report that arrived while the last round ran, within ``pace_ms`` of
  the report before it (reports keep coming, faster than a round or two);
- a change that finds synapse out of a stream is handed over at once: a lone change
  waits for nothing, nor does a change that arrives during the tail of the previous
  change's round (its render after HAProxy has the commands), milliseconds after it;
- in a stream, the next round first waits about as long as the last round took, capped
  at ``haproxy.pace_ms``, so each round takes a bigger batch; the wait ends early when
  no report arrived for ``GAP_S`` (the stream stopped: its last round does not wait
  needlessly);
- ``haproxy.coalesce_ms`` keeps its meaning: a fixed window before every round. When it
  is at least the paced wait it is used as before (no early end).

``Pacer`` holds no task: the reconciler tells it of reports and rounds, and awaits its
``wait()``. The clock is injectable (tests use a fake one).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from synapse.config import HAProxyConfig

GAP_S = 0.001  # in a paced wait, a step without a new report ends the wait


class Pacer:
    def __init__(
        self, haproxy: HAProxyConfig | None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.clock = clock
        self.configure(haproxy)
        self.reports = 0  # reports received
        self.last_round_s = 0.0
        self.streaming = False  # see the module's docstring
        self.paced = 0  # rounds that waited for a stream (/status)
        self._last_report = -1e9  # (clock) when the last report arrived
        self._in_round = False
        self._close = False  # a report during this round came close after the one before

    def configure(self, haproxy: HAProxyConfig | None) -> None:
        """Without HAProxy (file_output only) nothing waits."""
        self.pace_s = haproxy.pace_ms / 1000 if haproxy else 0.0  # the adaptive wait's cap
        self.coalesce_s = haproxy.coalesce_ms / 1000 if haproxy else 0.0  # a fixed window

    def arrived(self) -> None:
        """A report arrived (the reconciler's sink: O(1))."""
        now = self.clock()
        if self._in_round and now - self._last_report <= self.pace_s:
            self._close = True
        self._last_report = now
        self.reports += 1

    def round_ended(self) -> None:
        self.last_round_s = self.clock() - self._started
        self.streaming, self._close, self._in_round = self._close, False, False

    def failed(self) -> None:
        """A failed round is retried after its backoff: no wait on top of that."""
        self.streaming, self._close, self._in_round = False, False, False

    def window(self) -> tuple[float, bool]:
        """(seconds to wait at most before the next round, whether a quiet gap ends it)."""
        paced = min(self.last_round_s, self.pace_s) if self.streaming else 0.0
        if paced > self.coalesce_s:
            return paced, True
        return self.coalesce_s, False

    @staticmethod
    def next_sleep(
        now: float, deadline: float, gap_ends: bool, quiet: bool, floor: float = 0.0
    ) -> float:
        """How long to sleep next in a wait until ``deadline``; 0 when it is over.
        ``quiet``: no report arrived during the previous step (or for GAP_S before the
        wait); ``floor``: no quiet gap ends the wait before it (``coalesce_ms``)."""
        left = deadline - now
        if left <= 0 or not gap_ends:
            return max(left, 0.0)
        if now < floor:
            return min(left, floor - now)
        return 0.0 if quiet else min(left, GAP_S)

    async def wait(self) -> None:
        """Wait before a round as the rules above say; the round starts when it returns."""
        window, gap_ends = self.window()
        if window > 0:
            self.paced += gap_ends
            start = self.clock()
            deadline, floor = start + window, start + self.coalesce_s
            seen, quiet = self.reports, start - self._last_report >= GAP_S  # (stopped already)
            while (step := self.next_sleep(self.clock(), deadline, gap_ends, quiet, floor)) > 0:
                await asyncio.sleep(step)
                quiet, seen = self.reports == seen, self.reports
        self._started, self._in_round, self._close = self.clock(), True, False
