"""smartstack.tasks: waiting on an event must never eat a cancellation."""

from __future__ import annotations

import asyncio

import pytest

from smartstack.tasks import Wake, cancel_and_wait, wait_event


def test_wait_event_reports_set_and_timeout() -> None:
    async def main() -> tuple[bool, bool]:
        event = asyncio.Event()
        timed_out = await wait_event(event, 0.01)
        asyncio.get_running_loop().call_later(0.01, event.set)
        return timed_out, await wait_event(event, 5)

    assert asyncio.run(main()) == (False, True)


async def _loop_until_cancelled(event: asyncio.Event, rounds: list[int]) -> None:
    """A daemon-style loop: wait for work, clear, repeat, until cancelled."""
    while True:
        await wait_event(event, 10)
        event.clear()
        rounds.append(1)


def test_cancel_in_the_same_step_as_the_event_stops_the_loop() -> None:
    """The event is set and the task cancelled before the loop runs again (gh-86296)."""

    async def main() -> int:
        event, rounds = asyncio.Event(), []
        task = asyncio.create_task(_loop_until_cancelled(event, rounds))
        await asyncio.sleep(0)  # the task is now waiting on the event
        event.set()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 2)  # the outer bound only keeps a regression finite
        return len(rounds)

    assert asyncio.run(main()) == 0


def test_cancel_and_wait_returns_after_cleanup() -> None:
    async def main() -> list[str]:
        seen: list[str] = []

        async def worker() -> None:
            try:
                await asyncio.sleep(10)
            finally:
                seen.append("cleaned up")

        task = asyncio.create_task(worker())
        await asyncio.sleep(0)
        await cancel_and_wait(task)
        await cancel_and_wait(None)
        return seen

    assert asyncio.run(main()) == ["cleaned up"]


def test_a_task_that_swallows_its_cancel_is_cancelled_again(monkeypatch) -> None:
    """A lost cancellation (asyncio.wait_for before 3.12) must not make a stop hang."""
    from smartstack import tasks

    monkeypatch.setattr(tasks, "RECANCEL_S", 0.05)

    async def main() -> int:
        cancels = [0]

        async def worker() -> None:
            while True:
                try:
                    await asyncio.sleep(10)
                except asyncio.CancelledError:
                    cancels[0] += 1
                    if cancels[0] == 1:
                        continue  # the first one lost, as in wait_for's race
                    raise

        task = asyncio.create_task(worker())
        await asyncio.sleep(0)
        await asyncio.wait_for(cancel_and_wait(task), 2)  # (the bound keeps a regression finite)
        return cancels[0]

    assert asyncio.run(main()) == 2


def test_wake_is_an_event_for_one_waiter() -> None:
    async def main() -> list[object]:
        wake, seen = Wake(), []
        wake.set()
        await wake.wait()  # already set: at once
        wake.clear()
        waiter = asyncio.ensure_future(wake.wait())
        await asyncio.sleep(0)
        seen.append(waiter.done())
        with pytest.raises(RuntimeError):
            await wake.wait()  # a second waiter at once is refused
        wake.set()
        await waiter
        seen.append(wake.is_set())
        wake.clear()
        cancelled = asyncio.ensure_future(wake.wait())
        await asyncio.sleep(0)
        await cancel_and_wait(cancelled)
        later = asyncio.ensure_future(wake.wait())  # a cancelled wait leaves no waiter
        await asyncio.sleep(0)
        wake.set()
        await asyncio.wait_for(later, 5)
        seen.append(later.done())
        return seen

    assert asyncio.run(main()) == [False, True, True]
