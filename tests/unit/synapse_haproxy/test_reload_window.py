"""Turns around a slow reload: changes go in beside it (the window), and before a retry."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest
from prometheus_client import CollectorRegistry

from synapse.haproxy.metrics import HAProxyMetrics
from synapse.haproxy.ops import Reload
from synapse.haproxy.pending import PendingReload
from synapse.haproxy.reload_gate import ReloadGate
from synapse.haproxy.reload_window import ReloadWindow
from synapse.model import DesiredService

RELOAD = Reload((("config", "section backend web changed"),))


class Changes:
    """The reader's count of changes waiting for their turn (``change_waits``)."""

    def __init__(self) -> None:
        self.changes_waiting = 0

    @contextlib.contextmanager
    def change_waits(self):
        self.changes_waiting += 1
        try:
            yield
        finally:
            self.changes_waiting -= 1


def window_of(lock: asyncio.Lock) -> ReloadWindow:
    return ReloadWindow(lock, None, None, None)  # type: ignore[arg-type]  (turns only)


async def test_a_change_waiting_for_the_lock_goes_in_when_the_reload_opens_its_window() -> None:
    lock, changes, seen = asyncio.Lock(), Changes(), []
    window = window_of(lock)
    desired = [DesiredService("web", None, [])]  # type: ignore[arg-type]

    async def change(name: str) -> None:
        async with window.turn(changes.change_waits) as opened:
            seen.append((name, opened is not None))
            if opened is not None:
                opened.changes, opened.desired = opened.changes + 1, desired

    async with lock:  # the reloading apply
        first = asyncio.create_task(change("first"))
        await asyncio.sleep(0)
        assert changes.changes_waiting == 1 and not seen  # (queued for the lock)
        window.prepare(None, None)
        async with window.opened():  # HAProxy's part of the reload
            await asyncio.wait_for(first, 5)
            assert seen == [("first", True)] and changes.changes_waiting == 0
            later = asyncio.create_task(change("later"))  # (while it is open: at once)
            await asyncio.wait_for(later, 5)
        after = asyncio.create_task(change("after"))  # closed: the lock, after the reload
        await asyncio.sleep(0.01)
        assert not after.done() and changes.changes_waiting == 1
        assert window.take() is desired and window.take() is None  # (once)
    await asyncio.wait_for(after, 5)
    assert seen == [("first", True), ("later", True), ("after", False)]
    assert not lock.locked()


async def test_a_change_cancelled_while_it_waits_is_cancelled_window_or_not() -> None:
    lock, changes = asyncio.Lock(), Changes()
    window = window_of(lock)

    async def change() -> None:
        async with window.turn(changes.change_waits):
            raise AssertionError("never its turn")

    async with lock:
        waiting = asyncio.create_task(change())
        await asyncio.sleep(0)
        waiting.cancel()
        window.prepare(None, None)
        async with window.opened():  # (it wakes the waiting changes: this one was cancelled)
            with pytest.raises(asyncio.CancelledError):
                await waiting
    assert changes.changes_waiting == 0 and not lock.locked() and window.take() is None


async def test_a_due_retry_lets_a_change_waiting_for_the_lock_go_first() -> None:
    """A change queued behind a retried reload goes first (its own apply reloads too):
    the retry that took the lock ahead of it held a withdrawn server in HAProxy for the
    whole reload, 10 s when the reload command hung."""
    lock, changes, order = asyncio.Lock(), Changes(), []
    gate = ReloadGate(0.0, 0.0, time.monotonic, lambda: 0.5)

    async def retry() -> None:
        order.append("retry")

    pending = PendingReload(gate, lock, retry, HAProxyMetrics(CollectorRegistry()), changes)

    async def change() -> None:
        with changes.change_waits():
            await lock.acquire()
        order.append("change")
        lock.release()

    async with lock:  # an apply holds it when the retry comes due, and the change
        pending.wait_for_turn(RELOAD)
        await asyncio.sleep(0)  # (the retry queues for the lock first)
        task = asyncio.create_task(change())
        await asyncio.sleep(0)
    await asyncio.wait_for(task, 5)
    for _ in range(100):
        if len(order) == 2:
            break
        await asyncio.sleep(0.01)
    assert order == ["change", "retry"]
