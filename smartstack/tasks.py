"""Small asyncio helpers shared by the daemons' long-running parts."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel ``task`` and wait until its cleanup has run (None is fine).

    Waiting matters: a task that is only cancelled may still be closing a socket or
    writing a file when its owner goes on (or the loop closes under it).
    """
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


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
