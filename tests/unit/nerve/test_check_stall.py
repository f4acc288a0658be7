"""A check's timeout blames the service, not a stalled loop (nerve.checks.base)."""

from __future__ import annotations

import asyncio
import time

from nerve.checks.base import BaseCheck, Passed


class _Answering(BaseCheck):
    """Its "service" answers after ``answer_s``; the loop stalls ``stall_s`` right after the
    probe starts (a container throttled by its CPU quota, a GC pause)."""

    def __init__(self, timeout: float, answer_s: float, stall_s: float) -> None:
        super().__init__("t", timeout)
        self.answer_s, self.stall_s = answer_s, stall_s

    async def probe(self) -> Passed:
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[str] = loop.create_future()
        loop.call_later(self.answer_s, answer.set_result, "200")
        if self.stall_s:
            loop.call_soon(time.sleep, self.stall_s)  # the whole process stops running
        return Passed(await answer)


async def test_an_answer_that_came_during_a_stall_passes():
    result = await _Answering(timeout=0.1, answer_s=0.01, stall_s=0.2).run()
    assert result.ok, result.detail


async def test_a_slow_service_still_times_out():
    result = await _Answering(timeout=0.1, answer_s=0.5, stall_s=0.0).run()
    assert not result.ok and result.detail == "timed out after 0.1s"
    assert 0.09 < result.latency < 0.3


async def test_a_slow_service_during_a_stall_times_out_after_one_short_grace():
    result = await _Answering(timeout=0.1, answer_s=1.0, stall_s=0.2).run()
    assert not result.ok and "timed out" in result.detail
    assert result.latency < 0.5  # the stall (0.2 s) and one grace, not the service's 1 s


async def test_an_answer_in_time_passes_with_its_latency():
    result = await _Answering(timeout=0.5, answer_s=0.01, stall_s=0.0).run()
    assert result.ok and result.latency < 0.4
