"""The boot's own clock, for ages that must survive a step of the wall clock.

A wall-clock time kept in a file (synapse's state file, nerve's maintenance flags) says
nothing true once the clock is stepped (an RTC wrong at boot, NTP syncing later): an age
taken from it is off by the step. CLOCK_BOOTTIME never steps and counts suspend too, and
the kernel's ``boot_id`` says whether a time taken from it belongs to this boot: within the
same boot, a file that keeps both is timed on boottime; after a reboot only the wall clock
is left (its rule, whatever it is, applies).
"""

from __future__ import annotations

import time
from collections.abc import Callable

BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"
STEP_MIN = 2.0  # seconds the wall clock must move against boottime to be a step (not slew)


def boot_id() -> str | None:
    """This boot's id (Linux), None where there is none (a file so stamped is never taken
    for this boot's)."""
    try:
        with open(BOOT_ID_PATH, encoding="ascii") as file:
            return file.read().strip() or None
    except OSError:
        return None


def boottime() -> float:
    """Seconds since boot, suspend included (CLOCK_BOOTTIME; the monotonic clock elsewhere)."""
    clock = getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC)
    return time.clock_gettime(clock)


def wall_offset(wall: float, boot: float) -> float:
    """The wall clock's lead over boottime: constant but for a step (or slow slew)."""
    return wall - boot


class WallStep:
    """Sees the wall clock step: ``poll()`` returns by how many seconds it moved against
    boottime since the last poll (positive: ahead), None below STEP_MIN."""

    def __init__(
        self,
        wall: Callable[[], float] = time.time,
        boot: Callable[[], float] = boottime,
        minimum: float = STEP_MIN,
    ) -> None:
        self._wall, self._boot, self._minimum = wall, boot, minimum
        self._offset = wall_offset(wall(), boot())

    def poll(self) -> float | None:
        offset = wall_offset(self._wall(), self._boot())
        step = offset - self._offset
        if abs(step) < self._minimum:
            return None
        self._offset = offset
        return step
