"""A reload or check command cancelled (synapse stops) is killed with everything it
started, at once, even when the cancel comes while the process is still being started."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
import uuid

from synapse.haproxy.commands import run_command


def running(marker: str) -> bool:
    return subprocess.run(["pgrep", "-f", marker], capture_output=True).returncode == 0


async def test_a_command_cancelled_while_it_starts_leaves_nothing_running() -> None:
    # A shell that starts a child (as a reload script does): asyncio's own cleanup of a
    # cancelled start killed the shell alone, and the child ran on.
    marker = f"{30 + uuid.uuid4().int % 1000 / 1000:.3f}"
    task = asyncio.ensure_future(run_command(f"sleep {marker} & wait", 60))
    await asyncio.sleep(0)  # the process is being started
    task.cancel()
    cancelled = time.monotonic()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    # before: asyncio's cleanup killed the shell and waited for its pipe, held open by the
    # child: the cancel (synapse's stop) took the command's whole 30 s
    assert time.monotonic() - cancelled < 5
    deadline = time.monotonic() + 5
    while running(f"sleep {marker}") and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    leftover = running(f"sleep {marker}")
    subprocess.run(["pkill", "-f", f"sleep {marker}"], capture_output=True)
    assert not leftover, "the command's child ran on after the cancel"


async def test_a_command_cancelled_while_it_runs_leaves_nothing_running() -> None:
    marker = f"{40 + uuid.uuid4().int % 1000 / 1000:.3f}"
    task = asyncio.ensure_future(run_command(f"sleep {marker} & wait", 60))
    for _ in range(100):
        if running(f"sleep {marker}"):
            break
        await asyncio.sleep(0.02)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.2)
    leftover = running(f"sleep {marker}")
    subprocess.run(["pkill", "-f", f"sleep {marker}"], capture_output=True)
    assert not leftover
