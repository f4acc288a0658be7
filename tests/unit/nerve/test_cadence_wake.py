"""The check starts a stall of nerve held go spread after the wake, not as one burst
(nerve/cadence.py ``Wake``; no I/O: pure logic and scripted checks on a blocked loop).

Before (review s34), every start that became due during a stall went in the wake's first
instant: 12 checks of one backlog-5 port after a 0.5 s SIGSTOP overflowed its listen queue
and `fall: 1` withdrew a healthy service after 11 of 15 stalls."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from itertools import pairwise

import pytest
from stall_witness import held_for, witnessing
from test_cadence_spread import Probe, service

from nerve.cadence import (
    AFTER_S,
    CHECK_STEP,
    PACE_MOST_S,
    PACE_N,
    PACE_S,
    STALL_S,
    START_WINDOW,
    WAKE,
    Cadence,
    Wake,
)

STALLED, WOKE = 10.1, 10.6  # a 0.5 s stall


def crowd(times: list[float], within: float) -> int:
    """The most starts within ``within`` seconds of one another."""
    return max(sum(1 for t in times if a <= t < a + within) for a in times)


def test_rounds_a_stall_held_start_at_their_phase_after_the_wake() -> None:
    """12 services, interval 0.5 s (tests/integration/nerve/test_checks_one_port.py): each
    round due during the stall starts within the start window after the wake, at most two
    within 10 ms (the rounds' own spread; before: all at the wake)."""
    wake = Wake()
    cadences = [Cadence.of(f"s{n}", 0.5) for n in range(12)]
    rounds = [(c, 10.0 + c.first_delay() + k * 0.5) for c in cadences for k in range(2)]
    held = [(c, due) for c, due in rounds if STALLED <= due < WOKE]
    wake.note(min(due for _, due in held), WOKE)
    assert wake.at == WOKE
    starts = [wake.round_base(due, WOKE, c) for c, due in held]
    assert len(starts) == 12
    assert all(WOKE <= t < WOKE + START_WINDOW for t in starts)
    assert crowd(starts, 0.01) <= 2
    # One due after the wake goes as planned, one the loop reaches late goes now.
    assert wake.round_base(WOKE + 0.3, WOKE + 0.3, cadences[0]) == WOKE + 0.3
    assert wake.round_base(10.2, WOKE + 0.5, cadences[0]) == WOKE + 0.5


def test_a_services_checks_a_stall_held_start_a_step_apart_after_the_wake() -> None:
    """One service with 12 checks, stalled mid-round: the 7 held go CHECK_STEP apart."""
    wake, cadence = Wake(), Cadence.of("s0", 0.5)
    offsets = cadence.check_offsets(12)
    dues = [10.0 + offset for offset in offsets]
    wake.note(dues[5], WOKE)
    held = [wake.start(due, WOKE, cadence, off) for due, off in zip(dues, offsets, strict=True)]
    held = held[5:]  # (the first 5 started before the stall)
    assert all(b - a >= CHECK_STEP - 1e-9 for a, b in pairwise(held))
    assert WOKE <= held[0] <= WOKE + START_WINDOW + offsets[5]


def test_only_a_late_sleep_is_a_wake_and_one_wake_is_seen_once() -> None:
    """A loop late by less than STALL_S is no wake (its starts go as planned); sleepers the
    busy loop reaches later belong to the wake already seen (their starts would drift)."""
    wake = Wake()
    wake.note(10.0, 10.0 + STALL_S * 0.9)
    assert wake.at == float("-inf")
    wake.note(STALLED, WOKE)
    wake.note(10.3, WOKE + 0.15)  # due during the stall, reached 0.15 s after the wake
    assert wake.at == WOKE
    wake.note(WOKE + 1.0, WOKE + 1.2)  # a second stall
    assert wake.at == WOKE + 1.2


def test_after_a_wake_a_late_loop_starts_a_few_checks_at_a_time() -> None:
    """Right after a wake the loop often runs late again (its other threads catching up):
    the spread starts would go together (review s35: 5 within 1 ms, a SYN dropped). Within
    AFTER_S of the wake at most PACE_N start per PACE_S on one port; later, or with no wake,
    all go."""
    wake = Wake()
    port, other = ("127.0.0.1", 8080), ("127.0.0.1", 8081)
    assert [wake.pace(5.0, port, 5.0) for _ in range(10)] == [0.0] * 10  # no wake: never paced
    wake.note(STALLED, WOKE)
    now = WOKE + 0.06  # seven starts due by now, the loop late
    waits = [wake.pace(now, port, now) for _ in range(7)]
    assert waits[:PACE_N] == [0.0] * PACE_N
    assert all(w == pytest.approx(PACE_S) for w in waits[PACE_N:])
    assert [wake.pace(now, other, now) for _ in range(PACE_N)] == [0.0] * PACE_N  # another port
    assert [wake.pace(now + PACE_S + 1e-9, port, now) for _ in range(4)][:PACE_N] == [0.0] * PACE_N
    # A throttled loop, back after 0.2 s: the starts paced that long go.
    assert wake.pace(now + PACE_MOST_S, port, now) == 0.0
    later = WOKE + AFTER_S
    assert [wake.pace(later, port, later) for _ in range(10)] == [0.0] * 10


@pytest.fixture
def fresh_wake() -> Iterator[None]:
    """The process's wake, forgotten after the test (no other test's checks are paced)."""
    yield
    WAKE.at, WAKE.starts = float("-inf"), {}


@pytest.mark.usefixtures("fresh_wake")
async def test_a_blocked_loop_releases_no_burst_of_checks() -> None:
    """A real event loop blocked 0.5 s (a stall of nerve, in process): the starts after it
    are spread as the rounds are (before: the held ones at once, 12 within 1 ms). A stall
    of this loaded process besides the block (the witness held outside it) is a wake of
    its own: starts paced PACE_MOST_S go by design (5 within 1 ms after a 0.3 s stall just
    before the block), so the starts after one are excused; unstalled, none is."""
    loop = asyncio.get_running_loop()
    for services, checks in ((12, 1), (1, 12)):
        starts: list[tuple[str, float]] = []
        watched = [
            service(f"s{n}", [Probe(f"s{n}c{k}", starts) for k in range(checks)], 0.5)
            for n in range(services)
        ]
        async with witnessing() as held:
            for each in watched:
                each.start()
            await asyncio.sleep(0.95)
            blocked = loop.time()
            woke = blocked + 0.5
            time.sleep(0.5)  # the stall: nothing on the loop runs
            await asyncio.sleep(0.4)
            for each in watched:
                await each.stop(withdraw=False)
        other = [due for due, end in held
                 if end - due - held_for([(due, end)], blocked, woke) >= 0.03]  # fmt: skip
        after = [t for _, t in starts if t >= woke]
        assert len(after) >= 6 or other, (services, checks, after)
        calm = [t for t in after if all(t < due for due in other)]
        assert not calm or crowd(calm, 0.005) <= 3, (services, checks, calm, held, woke)
