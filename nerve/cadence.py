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
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

START_WINDOW = 0.2  # seconds: the first rounds of the services started together spread here
CHECK_STEP = 0.02  # seconds between the starts of one service's checks in a round
CHECK_SPREAD = 0.5  # the most of the interval one round's checks spread over
LATE_SLACK = 0.1  # of an interval: what a late round may add to the first rounds' time


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

    def check_offsets(self, count: int) -> list[float]:
        """Seconds after the round's start at which each of its ``count`` checks starts."""
        step = min(CHECK_STEP, CHECK_SPREAD * self.interval / max(count - 1, 1))
        return [n * step for n in range(count)]


def checks_spread(check_interval: float, count: int) -> float:
    """How long after its round's start a service's last check starts."""
    return Cadence(check_interval, 0.0).check_offsets(max(count, 1))[-1]
