"""synapse.pacing: the wait before a round, with a fake clock and a fake sleep."""

from __future__ import annotations

import asyncio
import types

import pytest

from synapse import pacing
from synapse.config import HAProxyConfig
from synapse.pacing import GAP_S, Pacer


class Clock:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []
        self.pacer: Pacer | None = None
        self.arrive_per_sleep = 0  # reports arriving during each sleep (a stream)
        self.streaming_sleeps = 0  # ... for this many sleeps, then the stream stops

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        if len(self.sleeps) <= self.streaming_sleeps:
            assert self.pacer is not None
            for _ in range(self.arrive_per_sleep):
                self.pacer.arrived()


def pacer(clock: Clock, pace_ms: float = 4, coalesce_ms: float = 0) -> Pacer:
    haproxy = HAProxyConfig.model_validate(
        {"config_file_path": "/x", "reload_command": "true", "pace_ms": pace_ms,
         "coalesce_ms": coalesce_ms}
    )  # fmt: skip
    clock.pacer = Pacer(haproxy, clock)
    return clock.pacer


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(pacing, "asyncio", types.SimpleNamespace(sleep=fake.sleep))
    return fake


def run_round(p: Pacer, clock: Clock, seconds: float, arrivals: tuple[float, ...] = ()) -> None:
    """What the reconciler does: wait, run the round (reports arrive at these offsets into
    it), end it ``seconds`` after it started."""
    asyncio.run(p.wait())
    start = clock.now
    for offset in arrivals:
        clock.now = start + offset
        p.arrived()
    clock.now = start + seconds
    p.round_ended()


STREAM = (0.0005, 0.001, 0.002)  # reports 0.5-1 ms apart during a round


def test_a_lone_change_waits_for_nothing(clock: Clock) -> None:
    p = pacer(clock)
    run_round(p, clock, 0.003)  # a round during which nothing arrived
    clock.now += 5.0
    p.arrived()
    assert p.window() == (0.0, False)
    asyncio.run(p.wait())
    assert clock.sleeps == [] and p.paced == 0


def test_a_change_during_the_tail_of_the_last_changes_round_is_no_stream(clock: Clock) -> None:
    p = pacer(clock)
    clock.now += 1.0
    p.arrived()  # a change; then its round (render after the commands: 8 ms)
    run_round(p, clock, 0.008, arrivals=(0.006,))  # the next change, 6 ms after it
    assert p.window() == (0.0, False)


def test_reports_close_together_during_a_round_are_a_stream(clock: Clock) -> None:
    p = pacer(clock)
    run_round(p, clock, 0.003, arrivals=STREAM)
    assert p.window() == (pytest.approx(0.003), True)
    clock.now += 1.0
    p.arrived()  # one report per round, 2 ms apart: a stream too
    run_round(p, clock, 0.0015, arrivals=(0.001,))
    assert p.streaming
    run_round(p, clock, 0.0015, arrivals=(0.0012,))
    assert p.window() == (pytest.approx(0.0015), True)
    run_round(p, clock, 0.0015)  # nothing arrived during this one: the stream is over
    assert p.window() == (0.0, False)


def test_in_a_stream_the_wait_is_capped_at_pace_ms(clock: Clock) -> None:
    p = pacer(clock)
    run_round(p, clock, 0.050, arrivals=STREAM)  # a long round: the wait is capped
    assert p.window() == (pytest.approx(0.004), True)


def test_the_paced_wait_ends_when_the_stream_stops(clock: Clock) -> None:
    p = pacer(clock)
    run_round(p, clock, 0.010, arrivals=(0.009, 0.0095, 0.0099))  # still coming at its end
    clock.arrive_per_sleep, clock.streaming_sleeps = 2, 1  # one more step of reports, then none
    asyncio.run(p.wait())
    assert clock.sleeps == [GAP_S, GAP_S]  # the quiet step ended it: 2 ms, not 4
    assert p.paced == 1


def test_a_steady_stream_waits_the_whole_window_and_no_longer(clock: Clock) -> None:
    p = pacer(clock)
    run_round(p, clock, 0.0025, arrivals=STREAM)
    clock.arrive_per_sleep, clock.streaming_sleeps = 1, 100
    start = clock.now
    asyncio.run(p.wait())
    assert clock.now - start == pytest.approx(0.0025)
    assert all(step <= GAP_S for step in clock.sleeps)


def test_coalesce_ms_keeps_its_meaning(clock: Clock) -> None:
    p = pacer(clock, coalesce_ms=10)
    assert p.window() == (0.010, False)  # before every round, stream or not
    run_round(p, clock, 0.003, arrivals=STREAM)
    assert clock.sleeps == pytest.approx([0.010])  # one fixed sleep: no early end
    assert p.window() == (0.010, False)
    small = pacer(clock, coalesce_ms=1)  # smaller than the paced wait: the paced wait
    run_round(small, clock, 0.003, arrivals=STREAM)
    assert small.window() == (pytest.approx(0.003), True)


def test_pace_ms_0_turns_pacing_off_and_without_haproxy_nothing_waits(clock: Clock) -> None:
    p = pacer(clock, pace_ms=0)
    run_round(p, clock, 0.003, arrivals=STREAM)
    assert p.window() == (0.0, False)
    bare = Pacer(None, clock)
    run_round(bare, clock, 0.003, arrivals=STREAM)
    assert bare.window() == (0.0, False)


def test_a_failed_round_is_not_paced_on_top_of_its_backoff(clock: Clock) -> None:
    p = pacer(clock)
    asyncio.run(p.wait())
    p.arrived()
    p.arrived()
    p.failed()
    assert p.window() == (0.0, False)


def test_a_stream_that_stopped_before_the_wait_costs_no_sleep(clock: Clock) -> None:
    p = pacer(clock)
    run_round(p, clock, 0.003, arrivals=(0.0005, 0.001))  # a stream; its last report 2 ms ago
    assert p.window()[1]
    asyncio.run(p.wait())
    assert clock.sleeps == []  # quiet for longer than GAP_S already: the round starts at once


def test_a_quiet_gap_does_not_cut_coalesce_ms_short(clock: Clock) -> None:
    p = pacer(clock, coalesce_ms=2)
    run_round(p, clock, 0.0035, arrivals=(0.003, 0.0034))  # a stream, paced wait 3.5 ms > 2
    start = clock.now
    asyncio.run(p.wait())  # nothing more arrives: the wait still lasts coalesce_ms
    assert clock.now - start == pytest.approx(0.002)
