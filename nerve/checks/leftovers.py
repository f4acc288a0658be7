"""What an exec check's command leaves in its process group once the verdict is in.

The group gets SIGTERM with the verdict. A process that ignores it (``trap '' TERM``, a
daemon that masks signals) stayed for ever, one more per round: at 0.2 s intervals a
pids limit of 60 was full in ~6 s, and then no exec check of any service got a verdict.
So what is left gets SIGKILL after ``GRACE``, or at the next start of the same check if
that comes first (a round never starts next to the previous round's leftovers), or when
the check is closed. A command that exited and left nothing costs one failed killpg(),
as before: no timer, no scan.

A group's id is the pid of its leader, which is reaped by then, and the kernel hands the
number out again once the group is empty. A group that is still there at the sweep is
killed only if one of its processes was already running when it got the SIGTERM (/proc
starttime): while such a process lives the group was never empty, so the id cannot have
passed to another group. Otherwise it is left alone (whatever holds the number now is
not ours). What remains is the microseconds between that look and the kill: the last such
process would have to die and the whole pid space (``kernel.pid_max``) be used up again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time

from smartstack.logs import event

log = logging.getLogger("nerve.checks")

GRACE = 1.0  # seconds from SIGTERM to SIGKILL (a TERM handler's time to clean up)
_TICKS = os.sysconf("SC_CLK_TCK")  # the unit of /proc/<pid>/stat's starttime
_BOOTTIME = getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC)  # (no /proc: no sweep)


class Leftovers:
    """One exec check's leftovers: at most one process group waiting for its SIGKILL."""

    def __init__(self, check: str, command: str) -> None:
        self.check, self.command = check, command
        self._pending: tuple[int, int, asyncio.TimerHandle] | None = None
        self._streak = False  # logged once while rounds keep leaving something to kill

    def terminate(self, pgid: int) -> None:
        """The verdict is in: SIGTERM the command's group; SIGKILL later what ignores it."""
        self.sweep()
        if not signal_group(pgid, signal.SIGTERM):
            self._streak = False  # nothing was left: the usual case
            return
        handle = asyncio.get_running_loop().call_later(GRACE, self.sweep)
        self._pending = (pgid, boot_ticks(), handle)

    def sweep(self) -> None:
        """SIGKILL the pending group (after the grace, at the next start, at close)."""
        if self._pending is None:
            return
        pgid, termed_at, handle = self._pending
        self._pending = None
        handle.cancel()
        killed = kill_if_ours(pgid, termed_at)
        if killed and not self._streak:
            event(log, "exec_leftover_killed", level=logging.WARNING, check=self.check,
                  command=self.command, processes=killed, grace=GRACE)  # fmt: skip
        self._streak = killed > 0


def signal_group(pgid: int, signum: int) -> bool:
    """Whether the group still had a process to signal (ESRCH: it is empty)."""
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def kill_if_ours(pgid: int, termed_at: int) -> int:
    """SIGKILL group ``pgid`` if it is still the one that got SIGTERM at ``termed_at``
    (clock ticks since boot); how many processes it held."""
    if not signal_group(pgid, 0):
        return 0  # all gone with the SIGTERM: no scan
    found = members(pgid)
    if not any(started <= termed_at for started, _ in found):
        return 0  # the id names a newer group now (see the module's docstring)
    alive = sum(live for _, live in found)
    if alive:  # (zombies, where nothing reaps orphans, are past killing)
        signal_group(pgid, signal.SIGKILL)
    return alive


def members(pgid: int) -> list[tuple[int, bool]]:
    """Each process in group ``pgid``: its starttime (clock ticks since boot), and whether
    it still runs (not a zombie: one still holds the group's id)."""
    found: list[tuple[int, bool]] = []
    try:
        pids = [name for name in os.listdir("/proc") if name.isdigit()]
    except OSError:  # no /proc (not Linux), or nerve out of fds: nothing is killed
        return found
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
        except OSError:  # gone meanwhile
            continue
        fields = stat.rsplit(b")", 1)[1].split()  # after the command name, which may hold ")"
        if int(fields[2]) == pgid:  # state, ppid, pgrp (3rd to 5th); starttime the 22nd
            found.append((int(fields[19]), fields[0] not in (b"Z", b"X")))
    return found


def boot_ticks() -> int:
    """Now, in the clock /proc's starttime counts (CLOCK_BOOTTIME, time-namespace aware)."""
    return int(time.clock_gettime(_BOOTTIME) * _TICKS)
