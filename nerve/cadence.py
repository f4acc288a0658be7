"""When a service's check rounds start: spread over the interval, never in lockstep (pure).

Each service keeps a fixed cadence, but at its own phase: a stable fraction taken from a
hash of its name, so two services of one nerve started together almost never start a
round in the same instant. Before,
every service's first round started at nerve's start and kept the same cadence, so every
service with the same interval connected in the same instant, round after round: several
checks of one port (one app under several paths or registries, a shared health proxy such
as hacheck, one service with many checks) overflowed its listen queue, the dropped SYN was
resent after 1 s, past the check's timeout, and ``fall`` withdrew healthy instances.

The first round of a service is not held back a whole interval: it starts within
``START_WINDOW`` (at the same fraction of that window as its phase is of the interval, so
services started together spread there), and its rounds then keep that offset: an interval
apart, as before, so `rise` and `fall` take the time they always took (review s30: a first
version moving the second round onto a phase of the whole interval made `rise: 3` pass
within 0.5 s at a 0.3 s interval, or registered up to half an interval late). A round
overdue after a stall is followed on the service's own grid again. One service's checks
start ``CHECK_STEP`` apart within a round (at most ``CHECK_SPREAD`` of the interval in all):
a port short of CPU accepts each before the next comes (review s30: 5 ms apart, 12 checks of
a backlog-5 server beside a busy process still overflowed it in 3 runs of 10).

A stall of nerve (SIGSTOP, a long GC pause, a throttled cgroup) holds every start that
becomes due meanwhile, and the wake would release them all in its first instant: one burst
of connects, across services, that the spread above no longer shapes (review s34: 12 checks
of a backlog-5 port overflowed it after a 0.3 s stall and ``fall: 1`` withdrew a healthy
service). ``Wake`` notes the wake; a start it held goes at its place in a round that begins
at the wake at the service's phase (``wake_delay``), as a first round does, so a wake never
releases starts closer together than the rounds' own spread; for AFTER_S after it, no more
than PACE_N checks of one address start within PACE_S (``Wake.pace``), as the loop, late
again right after a wake, would release the spread starts together.
"""

from __future__ import annotations

import hashlib
import math
from collections import deque
from dataclasses import dataclass, field

START_WINDOW = 0.2  # seconds: the first rounds of the services started together spread here
CHECK_STEP = 0.02  # seconds between the starts of one service's checks in a round
CHECK_SPREAD = 0.5  # the most of the interval one round's checks spread over
LATE_SLACK = 0.1  # of an interval: what a late round may add to the first rounds' time
STALL_S = 0.1  # seconds: a sleep that ended this late was held by a stall of nerve
AFTER_S = 1.0  # seconds after a wake in which check starts are paced: PACE_N per PACE_S
PACE_N, PACE_S = 3, 0.01
PACE_MOST_S = 0.2  # seconds one start is paced at most: a throttled loop must not starve


def phase_of(name: str) -> float:
    """A stable fraction in [0, 1) for a service name: the same in every process and run
    (Python's ``hash`` of a str is not)."""
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def first_rounds_late(check_interval: float) -> float:
    """The most the spread delays a service's rounds since its start: the first round's
    delay plus the longer gap to the second (for bounds such as a leftover's holding)."""
    return min(check_interval, START_WINDOW) + check_interval * LATE_SLACK


@dataclass(frozen=True)
class Cadence:
    interval: float  # seconds: check_interval
    phase: float  # [0, 1): where in each interval the rounds start (phase_of)

    @classmethod
    def of(cls, name: str, check_interval: float) -> Cadence:
        return cls(check_interval, phase_of(name))

    def first_delay(self) -> float:
        """Seconds from the service's start to its first round."""
        return self.phase * min(self.interval, START_WINDOW)

    def next_start(self, started: float, origin: float) -> float:
        """When the round after one that started at ``started`` is due (the loop's clock),
        on the service's own grid ``origin + k * interval`` (``origin``: its first round):
        the grid point after the one nearest to ``started``. A punctual round is followed
        an interval later (`rise` and `fall` keep their time), a late one sooner, and one
        overdue by intervals (nerve stalled) returns the service to its own grid, so a
        stall does not bring the services back into lockstep."""
        nearest = math.floor((started - origin) / self.interval + 0.5)
        return origin + (nearest + 1) * self.interval

    def wake_delay(self) -> float:
        """Seconds after a wake from a stall at which the service's held starts begin: its
        phase of half an interval at most (the rounds stay well within the stale limit)."""
        return self.phase * min(START_WINDOW, self.interval / 2)

    def check_offsets(self, count: int) -> list[float]:
        """Seconds after the round's start at which each of its ``count`` checks starts."""
        step = min(CHECK_STEP, CHECK_SPREAD * self.interval / max(count - 1, 1))
        return [n * step for n in range(count)]


def checks_spread(check_interval: float, count: int) -> float:
    """How long after its round's start a service's last check starts."""
    return Cadence(check_interval, 0.0).check_offsets(max(count, 1))[-1]


@dataclass
class Wake:
    """When nerve's event loop last woke from a stall (one per process: ``WAKE``)."""

    at: float = float("-inf")  # monotonic: the wake, as first seen
    starts: dict[object, deque[float]] = field(default_factory=dict)  # (pace) by address

    def note(self, due: float, now: float) -> None:
        """A sleep due to end at ``due`` ended at ``now``: a wake if STALL_S late or more and
        due after the last wake (else it is that wake's, seen later: the loop is busy)."""
        if now - due >= STALL_S and due > self.at:
            self.at = now
            self.starts.clear()

    def round_base(self, due: float, now: float, cadence: Cadence) -> float:
        """When the checks of a round due at ``due`` start (``now``: the round's start): at
        once, unless the wake held it; then at the service's place after the wake."""
        return now if due >= self.at else max(now, self.at + cadence.wake_delay())

    def start(self, due: float, now: float, cadence: Cadence, offset: float) -> float:
        """When a check start due at ``due`` goes (``offset``: its place in its round): as
        planned, unless the wake held it; then at its place in the service's round after the
        wake. Asked once per start, so a loop woken again and again starves no check."""
        if due >= self.at:
            return due
        return max(now, self.at + cadence.wake_delay() + offset)

    def pace(self, now: float, address: object, since: float) -> float:
        """Seconds a check start at ``now`` waits (then ask again): within AFTER_S of a wake,
        until fewer than PACE_N checks of the same ``address`` (host and port) started in the
        last PACE_S. The loop often runs late again right after a wake (its other threads
        catching up): the spread starts would go together then (review s35: 5 within 1 ms,
        a SYN dropped). 0 otherwise; checks of other addresses never wait on each other, and
        none waits longer than PACE_MOST_S (``since``: when it began to): a loop that runs a
        few ms in every 200 (a throttled cgroup) would start a port's checks 3 at a time."""
        if now - self.at >= AFTER_S or now - since >= PACE_MOST_S:
            return 0.0
        recent = self.starts.setdefault(address, deque(maxlen=PACE_N))
        if len(recent) == PACE_N and now - recent[0] < PACE_S:
            return PACE_S - (now - recent[0])
        recent.append(now)
        return 0.0


WAKE = Wake()  # one per process: the loop is the process's
