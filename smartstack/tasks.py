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
