"""HAProxy's processes by pid: waiting for one to exit, whether one lives, how old it is, and
the stop sequence (soft, then hard, then killed) a master gets when synapse ends it.

A pidfd (``os.pidfd_open``) becomes readable when its process exits, whether it is our
child or not (an adopted master, a replaced one): no polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

TERM_WAIT = 5.0  # seconds after SIGTERM (a hard stop takes milliseconds) before SIGKILL


async def wait_pid_exit(pid: int) -> None:
    """Return when process ``pid`` has exited."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    loop.add_reader(fd, lambda: done.done() or done.set_result(None))
    try:
        await done
    finally:
        loop.remove_reader(fd)
        os.close(fd)


async def _ended(send: Callable[[int, int], None], pid: int, sig: int, wait: float) -> bool:
    """Send ``sig`` to ``pid``; whether it exited within ``wait`` seconds."""
    with contextlib.suppress(ProcessLookupError):
        send(pid, sig)
    try:
        async with asyncio.timeout(wait):
            await wait_pid_exit(pid)
    except TimeoutError:
        return False
    return True


async def end_master(pid: int, group: bool, grace: float) -> str:
    """Soft-stop master ``pid`` (SIGUSR1: its workers close their listeners and end once what
    is in flight has), SIGTERM (HAProxy's hard stop: the rest is cut) if it still runs after
    ``grace``, SIGKILL after TERM_WAIT more; ``group``: it leads its process group (our
    child), which gets the hard signals. How it ended: soft, hard or killed."""
    send = os.killpg if group else os.kill
    if grace > 0 and await _ended(os.kill, pid, signal.SIGUSR1, grace):
        return "soft"
    if await _ended(send, pid, signal.SIGTERM, TERM_WAIT):
        return "hard"
    with contextlib.suppress(ProcessLookupError):
        send(pid, signal.SIGKILL)
    await wait_pid_exit(pid)
    return "killed"


def reap(proc: subprocess.Popen[bytes]) -> None:
    """A master of ours that exited: reaped, and no worker of an old generation (they share
    its process group) outlives it."""
    proc.wait()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (dead, its parent has not reaped it yet) is not alive
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        # Reaped since the kill: gone. Taken for alive, a crashed adopted master's restart
        # was skipped and nothing adopted the one its container started (review s45:
        # the parent's reap lands between the two as both wake on the exit).
        return not Path("/proc/self").exists()  # (no /proc at all: kill's answer stands)
    except OSError:
        return True  # (unreadable: kill's answer stands)
    return stat[stat.rfind(")") + 2 : stat.rfind(")") + 3] != "Z"


def age(pid: int, proc: Path = Path("/proc")) -> float | None:
    """Seconds since process ``pid`` started (None: /proc does not say)."""
    try:
        stat = (proc / str(pid) / "stat").read_text()
        uptime = float((proc / "uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    try:  # starttime (field 22): clock ticks after boot
        return uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (ValueError, IndexError):
        return None


def cpu(pid: int) -> tuple[str, int] | None:
    """Process ``pid``'s state letter and CPU time so far (utime + stime, clock ticks);
    None: gone, or /proc does not say."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat[stat.rfind(")") + 2 :].split()
        return fields[0], int(fields[11]) + int(fields[12])  # (fields 3, 14 and 15)
    except (OSError, ValueError, IndexError):
        return None
