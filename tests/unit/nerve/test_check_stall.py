"""A check's timeout blames the service, not a stalled loop (nerve.checks.base)."""

from __future__ import annotations

import asyncio
import time

import pytest
from late_loop import lag_loop

from nerve.checks import base
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


class _Stepping(BaseCheck):
    """Its "service" answers at once, but reading the answer takes ``steps`` turns of the
    loop (a connect's completion, the transport, the read: each a callback of its own)."""

    def __init__(self, timeout: float, steps: int) -> None:
        super().__init__("t", timeout)
        self.steps = steps

    async def probe(self) -> Passed:
        for _ in range(self.steps):
            await asyncio.sleep(0)
        return Passed("read")


class _Hung(BaseCheck):
    """Its "service" never answers."""

    async def probe(self) -> Passed:
        await asyncio.get_running_loop().create_future()
        raise AssertionError("unreachable")


async def test_an_answer_read_while_the_loop_keeps_lagging_passes():
    """Each turn blocks 0.1 s for 1.2 s: the timeout (0.05 s) and every grace fire late, and
    the probe's ten turns take ~1 s. Before, the first grace cut it (turn 4)."""
    lag_loop(0.1, 1.2)
    result = await _Stepping(timeout=0.05, steps=10).run()
    assert result.ok, result.detail
    assert result.latency > 0.8  # it did sit through the lag


async def test_a_hung_service_in_a_lagging_loop_still_fails_once_the_loop_keeps_time():
    lag_loop(0.1, 0.4)
    result = await _Hung("t", 0.05).run()
    assert not result.ok and result.verdict and result.detail == "timed out after 0.05s"
    assert 0.35 < result.latency < 1.5  # cut by a grace that kept time, not at LATE_CAP


async def test_a_loop_late_past_the_cap_gives_no_verdict(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(base, "LATE_CAP", 0.3)
    lag_loop(0.1, 1.5)
    result = await _Hung("t", 0.05).run()
    assert not result.ok and not result.verdict and result.detail == base.STARVED
    assert 0.3 < result.latency < 1.2  # the cap (and the cut's turns), not the whole lag


async def test_a_hung_service_behind_a_loop_that_stays_late_fails_within_a_bound(
    monkeypatch: pytest.MonkeyPatch,
):
    """The loop stays late for 4 s (a CPU quota). With no verdict every round for up to 5 s
    past the timeout, a hung service stayed registered ~1 min; now starved rounds give no
    verdict only until the check has gone MAX_BLIND_S (here 1 s) without one, then fail."""
    monkeypatch.setattr(base, "LATE_CAP", 0.3)
    monkeypatch.setattr(base, "MAX_BLIND_S", 1.0)
    lag_loop(0.1, 4.0)
    check = _Hung("t", 0.05)
    loop = asyncio.get_running_loop()
    started = loop.time()
    results = [await check.run()]
    while results[-1].verdict is False and len(results) < 10:
        results.append(await check.run())
    assert results[0].detail == base.STARVED and not results[0].verdict
    assert results[-1].verdict and not results[-1].ok
    assert "ran late all through its checks for" in results[-1].detail
    assert loop.time() - started < 3.0  # the 1 s blind spot plus a round, not the whole lag


async def test_starved_rounds_within_the_blind_spot_never_fail(monkeypatch: pytest.MonkeyPatch):
    """Three starved rounds in a row (a heavily throttled nerve with hundreds of healthy
    services) give no verdict every time: failing the second one withdrew 278 of 300
    healthy services at once (fall 2) in a reviewer's run."""
    monkeypatch.setattr(base, "LATE_CAP", 0.3)
    lag_loop(0.1, 2.0)
    check = _Hung("t", 0.05)
    verdicts = [(await check.run()).verdict for _ in range(3)]
    assert verdicts == [False, False, False]
