"""The services' rounds are spread over the interval, a service's checks over a few ms, and
the first round still comes at once (nerve/cadence.py; no I/O: scripted checks)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st
from nerve_fakes import Recorder
from stall_witness import held_for, witness, witnessing

from nerve.cadence import AFTER_S, CHECK_STEP, START_WINDOW, Cadence, phase_of
from nerve.checks.base import CheckResult
from nerve.freshness import stale_after
from nerve.service import Service

intervals = st.floats(min_value=0.01, max_value=600.0)
fractions = st.floats(min_value=0.0, max_value=0.999999)
clock = st.floats(min_value=0.0, max_value=1e7)  # the loop's monotonic clock


def test_a_phase_is_stable_and_follows_the_name_only() -> None:
    """The same in every process and run: a restart or SIGHUP keeps the service's place."""
    digest = hashlib.blake2b(b"web", digest_size=8).digest()
    assert phase_of("web") == int.from_bytes(digest, "big") / 2**64
    assert 0.0 <= phase_of("web") < 1.0
    assert phase_of("web") != phase_of("web_admin")
    assert Cadence.of("web", 0.5) == Cadence(0.5, phase_of("web"))


def test_services_of_one_nerve_start_their_rounds_apart() -> None:
    """The review's exp4.py case (12 services, interval 0.5 s): rounds at least ~2 ms apart,
    never two at once (before: all 12 in the same instant, every round)."""
    starts = sorted(phase_of(f"s{n}") * 0.5 for n in range(12))
    assert min(b - a for a, b in pairwise(starts)) > 0.001
    # 200 services: a few close, no burst (before: 200 SYNs at once).
    starts = sorted(phase_of(f"svc{n}") * 0.5 for n in range(200))
    assert max(sum(1 for s in starts if a <= s < a + 0.005) for a in starts) <= 10


@given(intervals, fractions)
def test_the_first_round_comes_within_the_start_window(interval: float, phase: float) -> None:
    """Not an interval late: with `check_interval: 60` a service still registers at once."""
    delay = Cadence(interval, phase).first_delay()
    assert 0.0 <= delay <= min(interval, START_WINDOW)


@given(intervals, fractions, clock, st.integers(min_value=0, max_value=10_000))
def test_a_punctual_round_is_followed_an_interval_later(
    interval: float, phase: float, origin: float, k: int
) -> None:
    """`rise` and `fall` keep their time: rounds an interval apart on the service's grid,
    and a round less than half an interval late is followed on the grid."""
    cadence = Cadence(interval, phase)
    on_grid = origin + k * interval
    for started in (on_grid, on_grid + 0.49 * interval):
        due = cadence.next_start(started, origin)
        assert due == pytest.approx(on_grid + interval, rel=1e-9, abs=1e-6)


@given(intervals, fractions, clock, st.floats(min_value=0.0, max_value=1e5))
def test_any_round_is_followed_on_its_grid_never_like_a_stall(
    interval: float, phase: float, origin: float, late: float
) -> None:
    """An overdue round (nerve stopped) or a long one: back on the service's own grid (a
    stall does not bring the services back into lockstep), never sooner than half an
    interval, never so late that it looks like a stall of nerve's own."""
    started = origin + late
    due = Cadence(interval, phase).next_start(started, origin)
    assert 0.5 * interval - 1e-6 <= due - started <= 1.5 * interval + 1e-6
    steps = (due - origin) / interval
    assert steps == pytest.approx(round(steps), abs=1e-6)
    assert due - started < stale_after(interval, [0.0])


def test_one_services_checks_start_a_few_ms_apart() -> None:
    assert Cadence(0.5, 0.3).check_offsets(1) == [0.0]
    assert Cadence(0.5, 0.3).check_offsets(4) == pytest.approx([0, CHECK_STEP, 2 * CHECK_STEP,
                                                                3 * CHECK_STEP])  # fmt: skip
    # Many checks on a short interval: all within half of it.
    offsets = Cadence(0.1, 0.3).check_offsets(50)
    assert offsets[-1] == pytest.approx(0.05) and offsets == sorted(set(offsets))


class Probe:
    """A check that records when it starts, into a list shared by all services."""

    type = "scripted"
    timeout = 0.1

    def __init__(self, name: str, starts: list[tuple[str, float]]) -> None:
        self.name, self.starts = name, starts

    async def run(self) -> CheckResult:
        self.starts.append((self.name, asyncio.get_running_loop().time()))
        return CheckResult(True, "ok", 0.0)

    async def close(self) -> None:
        pass


def service(name: str, checks: list[Probe], interval: float) -> Service:
    return Service(name, checks, [(1, 1)] * len(checks), Recorder(), check_interval=interval)


async def test_services_started_together_check_apart_and_register_at_once() -> None:
    """12 services started in the same instant (nerve's start), interval 0.5 s: never more
    than two checks within 1 ms (before: all 12 in the same instant, every round), each
    registered within the start window, and each an interval between its rounds. (Rounds
    a stall of this loaded process held late are followed on their grid by design, sooner
    or later: only those the loop ran on time are held to the window and the interval; a
    0.3 s stall broke both.)"""
    starts: list[tuple[str, float]] = []
    held: list[tuple[float, float]] = []
    watching = asyncio.ensure_future(witness(held))
    services = [service(f"s{n}", [Probe(f"s{n}", starts)], 0.5) for n in range(12)]
    began = asyncio.get_running_loop().time()
    for each in services:
        each.start()
    await asyncio.sleep(1.7)
    for each in services:
        await each.stop(withdraw=False)
    watching.cancel()
    times = sorted(t for _, t in starts)
    # (a loaded host fires late timers together now and then: the median, not the worst;
    # and the starts a stall released are the wake's to pace: test_cadence_wake.py)
    calm = [t for t in times if not any(h <= t < h + AFTER_S for _, h in held)]
    crowds = sorted(sum(1 for t in calm if a <= t < a + 0.001) for a in calm)
    assert not crowds or crowds[len(crowds) // 2] <= 2
    for each in services:
        reporter = each.reporter
        assert isinstance(reporter, Recorder) and reporter.decisions == [True]
        decided = reporter.decided_at[0]
        if not any(began < t <= decided for _, t in held):
            assert decided - began < START_WINDOW + 0.05
        own = [t for name, t in starts if name == each.name]
        assert len(own) <= 4 and (len(own) >= 3 or held), own
        for a, b in pairwise(own):
            if not any(a - 0.5 < t <= b for _, t in held):
                assert b - a == pytest.approx(0.5, abs=0.1), (a, b)


async def test_a_services_checks_do_not_start_at_once() -> None:
    """One service with 10 checks (one port): each starts its offset after the round's
    start, never sooner (before: all 10 at once); the round is complete after them."""
    starts: list[tuple[str, float]] = []
    web = service("web", [Probe(f"c{n}", starts) for n in range(10)], 0.5)
    began = asyncio.get_running_loop().time()
    await web.run_round()
    # Each check's first start (a stall of this loaded process past the 0.5 s interval
    # lets the first checks start again within the round, as designed: c0 again at 4th)
    first: dict[str, float] = {}
    for name, at in starts:
        first.setdefault(name, at)
    assert list(first) == [f"c{n}" for n in range(10)]
    for n, at in enumerate(first.values()):
        assert at - began >= n * CHECK_STEP - 0.001
    assert web.rounds == 1 and web.state.healthy


async def test_a_service_started_a_while_after_it_was_built_sees_no_stall() -> None:
    """Built, then started later (a reload's new service waits for the old registration's
    withdrawal, up to 5 s), its first round spread: no stall of nerve's own (its limit
    here is 0.3 s). A stall of this loaded process while it runs is one, and said: a gap
    the witness saw held down to the limit is excused. The gap counts from the start (from
    the build, before the fix: 0.4 s more than the stall, so that one is never excused)."""
    stale: list[tuple[float, float]] = []  # (when, gap) of each checks_stale

    class Stale(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.msg == "checks_stale":
                stale.append((time.monotonic(), record.smartstack_fields["gap_s"]))

    logger, said = logging.getLogger("nerve.service"), Stale()
    logger.addHandler(said)
    try:
        async with witnessing() as held:
            starts: list[tuple[str, float]] = []
            web = service("web", [Probe("c0", starts)], 0.05)
            await asyncio.sleep(0.4)
            started = time.monotonic()
            web.start()
            await asyncio.sleep(0.2)
            await web.stop(withdraw=False)
    finally:
        logger.removeHandler(said)
    limit = web.freshness.limit
    unexcused = [(at, gap) for at, gap in stale
                 if gap - held_for(held, max(started, at - gap), at) > limit]  # fmt: skip
    assert starts and unexcused == [], (stale, held)
