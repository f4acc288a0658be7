"""exec checks whose command leaves a background process holding its output pipe (real
commands): the verdict is the exit status, and no fd or wait outlives the round."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import uuid
from collections.abc import Iterator

import pytest

from nerve.checks.exec import ExecCheck


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


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

    def alive() -> int:
        found = subprocess.run(["pgrep", "-fc", f"^{tag}$"], capture_output=True, text=True)
        return int(found.stdout.strip() or 0)

    for _ in range(40):  # (a TERM'd process is gone within a few ms)
        if alive() == 0:
            break
        await asyncio.sleep(0.05)
    assert alive() == 0
