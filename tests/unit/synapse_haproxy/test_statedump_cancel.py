"""A dump round cancelled while its thread stages the new server-state file (synapse
stopping, a SIGHUP) leaves no ``.tmp`` file behind: the thread runs on after the cancel."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import pytest

from synapse.atomic import stage
from synapse.haproxy.statedump import StateDumper


async def test_a_cancel_while_the_file_is_staged_leaves_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "server-state"
    dumper = StateDumper(None, path, lambda: True)  # type: ignore[arg-type]
    started, go = threading.Event(), threading.Event()

    def staging() -> str:
        started.set()
        go.wait(10)
        return stage(path, "1\n# be_id be_name\n")

    task = asyncio.create_task(dumper._install(staging, None))
    assert await asyncio.to_thread(started.wait, 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    go.set()
    await asyncio.get_running_loop().shutdown_default_executor()  # (the thread has ended)
    assert list(tmp_path.iterdir()) == []


class Recording(ThreadPoolExecutor):
    """The loop's executor, its jobs' futures kept: done there, not yet seen by the loop."""

    def __init__(self) -> None:
        super().__init__(1)
        self.futures: list[Future[Any]] = []

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.futures.append(super().submit(fn, *args, **kwargs))
        return self.futures[-1]


async def test_a_cancel_after_the_thread_staged_it_but_before_the_answer(tmp_path: Path) -> None:
    """The other order: the thread is done, its answer not delivered (the loop is busy)
    when the cancel comes; the cancelled side removes the file."""
    path, executor = tmp_path / "server-state", Recording()
    asyncio.get_running_loop().set_default_executor(executor)
    dumper = StateDumper(None, path, lambda: True)  # type: ignore[arg-type]
    task = asyncio.create_task(dumper._install(lambda: stage(path, "1\n"), None))
    for _ in range(100):  # (the task's first step hands the staging to the executor)
        if executor.futures:
            break
        await asyncio.sleep(0)
    assert wait(executor.futures, timeout=10).done  # the loop blocked: no answer delivered
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    executor.shutdown(wait=True)
    assert list(tmp_path.iterdir()) == []


async def test_a_round_not_cancelled_installs_the_staged_file(tmp_path: Path) -> None:
    path = tmp_path / "server-state"
    dumper = StateDumper(None, path, lambda: True)  # type: ignore[arg-type]
    assert await dumper._install(lambda: stage(path, "1\n"), None) is not None
    assert [p.name for p in tmp_path.iterdir()] == ["server-state"]
