"""A heartbeat of the test's own: when the test process itself was held (SIGSTOP, a loaded
CI machine descheduling it for a second), so a test can tell that stall, which moves every
timer of the product by design, from the product's own lateness. Unheld, nothing is excused.

``held`` is a list of (due, woke): a beat due at ``due`` came 0.03 s late or more."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Iterator

BEAT_S, LATE_S = 0.01, 0.03


async def witness(held: list[tuple[float, float]]) -> None:
    """On the running loop (its clock is time.monotonic): notes each late beat."""
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + BEAT_S
        await asyncio.sleep(BEAT_S)
        if loop.time() - due >= LATE_S:
            held.append((due, loop.time()))


@contextlib.asynccontextmanager
async def witnessing() -> AsyncIterator[list[tuple[float, float]]]:
    """``witness`` for the block: beating before it begins, and the beat a stall held noted
    before it ends (that beat wakes beside the test's own step, and may come after it)."""
    held: list[tuple[float, float]] = []
    task = asyncio.ensure_future(witness(held))
    await asyncio.sleep(0)
    try:
        yield held
    finally:
        await asyncio.sleep(0)
        task.cancel()


@contextlib.contextmanager
def beating() -> Iterator[list[tuple[float, float]]]:
    """The same on a thread of its own (a test without a loop, or one it blocks); read
    ``held`` after the block (the thread notes its last beat before it ends)."""
    held: list[tuple[float, float]] = []
    done = threading.Event()

    def beat() -> None:
        while not done.is_set():
            due = time.monotonic() + BEAT_S
            time.sleep(BEAT_S)
            if time.monotonic() - due >= LATE_S:
                held.append((due, time.monotonic()))

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield held
    finally:
        done.set()
        thread.join(1)


def held_for(held: list[tuple[float, float]], after: float, until: float) -> float:
    """Seconds of (after, until] the witness saw this process held (time.monotonic)."""
    return sum(max(0.0, min(woke, until) - max(due, after)) for due, woke in held)
