"""The reload window's turns, hand-back and merged result (``synapse.haproxy.reload_window``)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from synapse.change_gate import ChangeGate
from synapse.contract import ApplyOutcome, ApplyResult
from synapse.haproxy.reload_window import ReloadWindow, merged


def counted() -> contextlib.AbstractContextManager[None]:
    return contextlib.nullcontext()


def window(failed: list[BaseException] | None = None) -> tuple[asyncio.Lock, ReloadWindow]:
    lock = asyncio.Lock()
    return lock, ReloadWindow(lock, (failed if failed is not None else []).append)


async def test_a_change_waiting_for_the_lock_goes_in_when_the_window_opens() -> None:
    lock, win = window()
    await lock.acquire()  # (the reloading apply's)
    win.begin(None, None)
    got: list[object] = []

    async def change() -> None:
        async with win.turn(counted) as reload:
            got.append(reload)

    waiting = asyncio.ensure_future(change())
    await asyncio.sleep(0.01)
    assert not got  # the lock is held, nothing open
    async with win.opened():
        await asyncio.wait_for(waiting, 1)
        assert got == [win.reload]  # beside the reload, the lock still held
        assert lock.locked()
    assert win.end() is False  # (``changed`` is the controller's to set)
    lock.release()
    async with win.turn(counted) as reload:  # closed: the lock, as before
        assert reload is None and lock.locked()
    assert not lock.locked()


async def test_the_window_closes_after_the_change_in_it_and_a_late_one_waits_for_the_lock() -> None:
    lock, win = window()
    await lock.acquire()
    win.begin(None, None)
    order: list[str] = []
    inside = asyncio.Event()

    async def slow_change() -> None:
        async with win.turn(counted) as reload:
            assert reload is not None
            inside.set()
            await asyncio.sleep(0.05)
            order.append("change")

    async def late_change() -> None:
        async with win.turn(counted) as reload:
            assert reload is None  # (the window closed while it waited for its turn)
            order.append("late")

    async with win.opened():
        first = asyncio.ensure_future(slow_change())
        await inside.wait()
        late = asyncio.ensure_future(late_change())
        await asyncio.sleep(0)
    order.append("closed")
    win.end()
    lock.release()
    await asyncio.wait_for(asyncio.gather(first, late), 1)
    assert order == ["change", "closed", "late"]


async def test_a_cancelled_wait_leaves_the_lock_free() -> None:
    lock, win = window()
    await lock.acquire()

    async def change() -> None:
        async with win.turn(counted):
            pass

    waiting = asyncio.ensure_future(change())
    await asyncio.sleep(0.01)
    lock.release()  # the lock goes to it, and it is cancelled in the same turn
    waiting.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await waiting
    await asyncio.sleep(0)
    assert not lock.locked()


async def applying(win: ReloadWindow, lock: asyncio.Lock, release: asyncio.Event) -> ApplyResult:
    """A change's apply that reloads: the lock, then a window until ``release``."""
    async with lock:
        win.begin(None, None)
        try:
            async with win.opened():
                await release.wait()
        finally:
            win.end()
    return ApplyResult(reload=ApplyOutcome.DONE)


async def test_a_reloading_apply_hands_back_on_a_newer_report_only() -> None:
    lock, win = window()
    gate = ChangeGate()
    gate.on_report = win.poke
    release = asyncio.Event()
    task = asyncio.ensure_future(applying(win, lock, release))
    handing = asyncio.ensure_future(win.hand_back(task, gate, gate.reported))
    await asyncio.sleep(0.02)
    assert not handing.done()  # the window is open, no newer report: it waits
    gate.change()
    result = await asyncio.wait_for(handing, 1)
    assert result.reload is ApplyOutcome.PENDING and not task.done()
    release.set()
    assert (await task).reload is ApplyOutcome.DONE


async def test_without_a_report_the_result_is_the_apply_s() -> None:
    lock, win = window()
    gate = ChangeGate()
    release = asyncio.Event()
    task = asyncio.ensure_future(applying(win, lock, release))
    handing = asyncio.ensure_future(win.hand_back(task, gate, gate.reported))
    await asyncio.sleep(0.01)
    release.set()
    assert (await handing).reload is ApplyOutcome.DONE


async def test_a_handed_back_reload_that_raises_is_handed_to_failed_and_a_stop_cancels() -> None:
    failed: list[BaseException] = []
    lock, win = window(failed)
    gate = ChangeGate()
    gate.on_report = win.poke
    release = asyncio.Event()

    async def raising() -> ApplyResult:
        await applying(win, lock, release)
        raise RuntimeError("a bug")

    task = asyncio.ensure_future(raising())
    seen = gate.reported
    await asyncio.sleep(0.01)
    gate.change()
    assert (await win.hand_back(task, gate, seen)).reload is ApplyOutcome.PENDING
    release.set()
    with pytest.raises(RuntimeError):
        await task
    await asyncio.sleep(0)
    assert [str(e) for e in failed] == ["a bug"]

    hung = asyncio.ensure_future(applying(win, lock, asyncio.Event()))
    seen = gate.reported
    await asyncio.sleep(0.01)
    gate.change()
    assert (await win.hand_back(hung, gate, seen)).reload is ApplyOutcome.PENDING
    await asyncio.wait_for(win.cancel(), 1)  # a stop
    assert hung.cancelled() and not lock.locked() and len(failed) == 1


def test_merged_takes_the_latest_state_s_outcome_after_a_refusal_or_a_reload_done() -> None:
    done = ApplyResult(("a",), ApplyOutcome.DONE, (), True)
    assert merged(done, ApplyResult(("b",), ApplyOutcome.NONE)) == ApplyResult(
        ("a", "b"), ApplyOutcome.DONE, (), True
    )
    failed = ApplyResult((), ApplyOutcome.FAILED, (), False, "hung")
    waits = merged(failed, ApplyResult((), ApplyOutcome.PENDING, (), True))
    assert (waits.reload, waits.error, waits.config_written) == (ApplyOutcome.FAILED, "hung", True)
    later = merged(done, ApplyResult((), ApplyOutcome.PENDING))
    assert later.reload is ApplyOutcome.PENDING and later.ops == ("a",)
    refused = ApplyResult((), ApplyOutcome.INVALID, (), False, "refused")
    after = merged(refused, ApplyResult(("c",), ApplyOutcome.NONE))
    assert after.reload is ApplyOutcome.NONE and after.error is None and after.ops == ("c",)
