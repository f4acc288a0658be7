"""Small asyncio helpers shared by the daemons' long-running parts."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

RECANCEL_S = 5.0  # a task not done this long after its cancel is cancelled again


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel ``task`` and wait until its cleanup has run (None is fine).

    Waiting matters: a task that is only cancelled may still be closing a socket or
    writing a file when its owner goes on (or the loop closes under it). A cancellation can
    be lost (before Python 3.12, ``asyncio.wait_for`` swallows one that comes as its inner
    awaitable finishes, gh-86296), and the task then runs on: one still running
    RECANCEL_S after its cancel is cancelled again, so a stop never waits forever (its
    cleanup had those seconds).
    """
    if task is None:
        return
    task.cancel()
    while not task.done():
        await asyncio.wait({task}, timeout=RECANCEL_S)
        if not task.done():
            task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def stray_cancel(exc: BaseException) -> bool:
    """A CancelledError that is not our task's own cancellation: a call cancelled under
    it (a gRPC channel closed by another caller's failover). A long-running loop treats it
    as a failure to retry: let through, it would end the loop for good, silently (a nerve
    reporter that never wrote again; a synapse watcher frozen on its last list)."""
    task = asyncio.current_task()
    return isinstance(exc, asyncio.CancelledError) and task is not None and not task.cancelling()


def retryable(exc: BaseException) -> bool:
    """A failure a long-running loop retries: any Exception, and a stray cancel."""
    return isinstance(exc, Exception) or stray_cancel(exc)


async def wait_event(event: asyncio.Event, timeout: float | None) -> bool:
    """True when ``event`` is set within ``timeout`` seconds, False when the time ran out.

    Not ``asyncio.wait_for``: on Python 3.11 it swallows a cancellation that arrives in
    the same loop step as the event (gh-86296), and a loop waiting that way never stops.
    ``asyncio.timeout`` counts cancellations and lets ours through.
    """
    if event.is_set():
        return True
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return False
    return True


class Wake:
    """``asyncio.Event`` for one waiter at a time, without the Event's deque of waiters
    (~600 bytes): a thousand watchers each waiting on their own (issue 15)."""

    __slots__ = ("_set", "_waiter")

    def __init__(self) -> None:
        self._set = False
        self._waiter: asyncio.Future[None] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> None:
        if self._set:
            return
        if self._waiter is not None:
            raise RuntimeError("Wake has one waiter at a time")
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None
