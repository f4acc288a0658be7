"""exec checks whose command leaves a background process holding its output pipe (real
commands): the verdict is the exit status, and no fd, wait or process outlives the round
(one that ignores SIGTERM not by more than the grace)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from nerve.checks import leftovers
from nerve.checks.exec import ExecCheck


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def alive(tag: str) -> int:
    """How many of a test's leftovers still run (a zombie's command line is empty)."""
    found = subprocess.run(["pgrep", "-fc", f"^{tag}$"], capture_output=True, text=True)
    return int(found.stdout.strip() or 0)


async def gone(tag: str, within: float, but: int = 0) -> float:
    """Seconds until no more than ``but`` leftovers of ``tag`` run; fails after ``within``.
    pgrep runs in a thread: the loop keeps firing the check's timers (the grace's SIGKILL)."""
    started = time.monotonic()
    while await asyncio.to_thread(alive, tag) > but:
        assert time.monotonic() - started < within, f"{alive(tag)} leftovers still run"
        await asyncio.sleep(0.02)
    return time.monotonic() - started


@pytest.fixture
def tag() -> Iterator[str]:
    """A unique sleep duration naming the leftovers of one test (killed at its end)."""
    tag = f"sleep 7.{uuid.uuid4().int % 10**8:08d}"
    yield tag
    found = subprocess.run(["pgrep", "-f", f"^{tag}$"], capture_output=True, text=True)
    for pid in found.stdout.split():  # only this test's own leftovers (a unique tag)
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)


async def test_a_background_child_holding_stdout_does_not_time_the_check_out(tag: str) -> None:
    result = await ExecCheck("e", f"{tag} & echo healthy; exit 0", 0.5).run()
    assert (result.ok, result.detail, result.output) == (True, "exit status 0", "healthy\n")
    assert result.latency < 0.3  # the exit plus the pipe's grace, not the child's 7 s
    failed = await ExecCheck("e", f"{tag} & echo broken; exit 4", 0.5).run()
    assert (failed.ok, failed.detail) == (False, "exit status 4: broken")


async def test_a_detached_child_leaks_no_fd_per_round(tag: str) -> None:
    check = ExecCheck("e", f"setsid {tag} & echo healthy", 0.3)
    await check.run()
    before = open_fds()
    results = [await check.run() for _ in range(15)]
    assert [r.detail for r in results] == ["exit status 0"] * 15
    assert open_fds() - before <= 1, f"fds {before} -> {open_fds()}"


async def test_a_timeout_is_not_held_by_a_detached_child_holding_the_pipe(tag: str) -> None:
    result = await ExecCheck("e", f"setsid {tag} & sleep 60", 0.3).run()
    assert result.detail == "timed out after 0.3s"
    assert result.latency < 1.5  # the old code waited for the pipe: the child's 7 s


async def test_what_the_command_leaves_in_its_group_does_not_pile_up(tag: str) -> None:
    """One leftover per round would reach a container's pids limit (then nerve cannot fork
    and every exec check fails): the command's process group gets SIGTERM after the verdict
    (review: 20 rounds left 20 processes)."""
    for _ in range(10):
        assert (await ExecCheck("e", f"sh -c 'exec {tag}' & exit 0", 0.5).run()).ok
    await gone(tag, within=2.0)  # (a TERM'd process is gone within a few ms)


def trap_term(tag: str, ready: Path) -> str:
    """A command leaving a process that ignores SIGTERM, exiting once it does (``ready``)."""
    leftover = f"sh -c 'trap \"\" TERM; touch {ready}; exec {tag}' &"
    wait = f"for i in $(seq 50); do [ -e {ready} ] && exit 0; sleep 0.02; done; exit 1"
    return f"rm -f {ready}; {leftover} {wait}"


async def test_a_leftover_that_ignores_sigterm_is_killed_after_the_grace(
    tag: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """SIGTERM alone left one such process per round, for ever (review: 139 after 139
    rounds at 0.2 s; a pids limit of 60 full in ~6 s, then no exec check got a verdict).
    The previous round's goes when the next starts, the last one after the grace; logged
    once for the streak."""
    check = ExecCheck("e", trap_term(tag, tmp_path / "ready"), 2.0)
    with caplog.at_level(logging.WARNING, logger="nerve.checks"):
        for _ in range(4):
            assert (await check.run()).ok
            verdict = time.monotonic()  # its SIGTERM: the grace runs from here
            await gone(tag, within=0.5, but=1)  # the previous round's, killed at the start
            assert alive(tag) == 1  # this round's, within its grace
        await gone(tag, within=leftovers.GRACE + 1.0)
    # From the verdict, not from the pgreps above (0.4 s and more under load; alive() blocks
    # the loop, so the grace's timer fired later still).
    waited = time.monotonic() - verdict
    assert waited > leftovers.GRACE - 0.3  # it had the grace (since the verdict)
    [killed] = [r for r in caplog.records if r.getMessage() == "exec_leftover_killed"]
    assert killed.levelno == logging.WARNING


def running(tag: str) -> list[int]:
    """The pids of a test's leftovers that still run, read from /proc in this process: no
    pgrep to start (0.5 s and more of the time measured, at load 13 on 2 cores). Their
    command line holds the tag before their exec of it too; a zombie's is empty."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            if tag in Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode():
                found.append(int(pid))
    return found


async def test_a_removed_check_takes_its_leftover_with_it(tag: str, tmp_path: Path) -> None:
    """A check closed (reload, shutdown) does not leave its last round's leftover behind:
    gone at once, not at the grace's end (1 s after the verdict, at the earliest)."""
    check = ExecCheck("e", trap_term(tag, tmp_path / "ready"), 2.0)
    assert (await check.run()).ok
    assert running(tag), "no leftover to take"  # (it ignored the verdict's SIGTERM)
    closed = time.monotonic()
    await check.close()
    while running(tag):
        assert time.monotonic() - closed < 0.5, "the leftover still runs"
        await asyncio.sleep(0.01)


async def test_a_clean_command_costs_no_timer_and_no_scan(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing left in the group (the usual case: children, if any, ended before the
    command): one failed killpg(), as before, no /proc scan, no timer."""
    scans: list[int] = []
    monkeypatch.setattr(leftovers, "members", lambda pgid: scans.append(pgid) or [])
    for command in ("exit 0", "exit 3", "sleep 0.01 | cat; echo up"):
        check = ExecCheck("e", command, 1.0)
        for _ in range(3):
            await check.run()
            assert check.leftovers._pending is None
        await check.close()
    assert scans == []


def test_a_group_id_taken_by_a_newer_process_is_left_alone(tag: str) -> None:
    """The group's id is a reaped pid: once the group emptied, the number may name another
    process's group. The sweep kills a group only if a member predates the SIGTERM."""
    termed_at = leftovers.boot_ticks()
    time.sleep(3 / os.sysconf("SC_CLK_TCK"))  # its start a few clock ticks later
    newer = subprocess.Popen(tag.split(), start_new_session=True)  # a group of its own
    try:
        time.sleep(0.05)
        assert leftovers.kill_if_ours(newer.pid, termed_at) == 0
        assert newer.poll() is None, "a group that is not ours was killed"
        assert leftovers.kill_if_ours(newer.pid, leftovers.boot_ticks()) == 1
        assert newer.wait(timeout=2) == -signal.SIGKILL
    finally:
        newer.kill()
        newer.wait()
