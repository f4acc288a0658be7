"""Which admin connections are served when too many are open (pure: no sockets, no loop).

A health probe must be answered while other clients hold connections: Docker's
HEALTHCHECK, keepalived or anycast-healthchecker take a host out on a few failed probes.
So at the limit a connection that has waited ``grace`` seconds or more between requests
(idle keep-alive, or one that has sent nothing yet) is closed, the longest waiting first,
to make room. A younger one is kept: in a burst of new connections their requests are on
the way, and closing them reset clients with no answer. When none has waited long enough,
a new connection is read for a health probe only (``PROBE_ONLY``: the server answers probes
and refuses the rest with 503). Past the hard ceiling a connection is closed unread, so
file descriptors and read buffers stay bounded.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Hashable
from typing import Generic, Literal, TypeVar

K = TypeVar("K", bound=Hashable)

Verdict = Literal["serve", "probe_only", "drop"]


class Slots(Generic[K]):
    """``limit`` connections are served; up to ``ceiling`` are open in all."""

    def __init__(
        self,
        limit: int,
        ceiling: int,
        grace: float = 0.0,  # (0: an idle one is closed at once)
        report_every: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.ceiling = ceiling
        self.grace = grace
        self._served: set[K] = set()
        self._idle: dict[K, float] = {}  # served ones between requests: since, oldest first
        self._probe_only: set[K] = set()
        self._report_every = report_every
        self._clock = clock
        self._reported: float | None = None
        self._counts: Counter[str] = Counter()

    def admit(self, conn: K) -> tuple[Verdict, K | None]:
        """The new connection's verdict, and the idle connection to close for it (or None)."""
        if len(self._served) < self.limit:
            self._served.add(conn)
            return "serve", None
        oldest = next(iter(self._idle), None)
        if oldest is not None and self._clock() - self._idle[oldest] >= self.grace:
            self.release(oldest)  # its slot is the new one's now, before it has closed
            self._served.add(conn)
            self._counts["idle_closed"] += 1
            return "serve", oldest
        if len(self._served) + len(self._probe_only) < self.ceiling:
            self._probe_only.add(conn)
            self._counts["probe_only"] += 1
            return "probe_only", None
        self._counts["dropped"] += 1
        return "drop", None

    def idle(self, conn: K) -> None:
        """``conn`` waits for its next request: after ``grace``, it may be closed for a new
        connection."""
        if conn in self._served:
            self._idle.pop(conn, None)  # (re)inserted last: the newest idle one
            self._idle[conn] = self._clock()

    def active(self, conn: K) -> None:
        """``conn`` has started a request: it keeps its slot until it has its answer."""
        self._idle.pop(conn, None)

    def release(self, conn: K) -> None:
        self._served.discard(conn)
        self._idle.pop(conn, None)
        self._probe_only.discard(conn)

    def open(self) -> int:
        return len(self._served) + len(self._probe_only)

    def due_report(self) -> dict[str, int] | None:
        """What happened at the limit since the last report, at most once per
        ``report_every`` seconds (a flood of connections is one log line a minute)."""
        now = self._clock()
        if not self._counts or (
            self._reported is not None and now - self._reported < self._report_every
        ):
            return None
        self._reported = now
        counts = {"idle_closed": 0, "probe_only": 0, "dropped": 0, **self._counts}
        self._counts.clear()
        return counts
