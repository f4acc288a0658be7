"""A check's deadline follows what the service did, not how late nerve's loop ran
(nerve.checks.base.decide, and _Deadline with the probe's notes)."""

from __future__ import annotations

import asyncio

import pytest
from late_loop import lag_loop

from nerve.checks import base
from nerve.checks.base import BaseCheck, Passed, Step, decide
from nerve.checks.inflight import PROBE, Inflight

# The round started at 0 with a 1 s timeout: its deadline is 1.0 (loop times).
START, TIMEOUT = 0.0, 1.0
DEADLINE = START + TIMEOUT


def step(now: float, due: float, answered: bool | None, sent_at: float | None) -> Step:
    return decide(now, due, DEADLINE, TIMEOUT, answered, sent_at)[0]


def test_without_a_socket_the_loops_lateness_decides_as_before():
    assert step(1.0, 1.0, None, None) is Step.CUT  # on time: the timeout
    assert step(1.5, 1.0, None, None) is Step.GRACE  # late: a grace
    assert step(DEADLINE + base.LATE_CAP + 0.1, 1.9, None, None) is Step.STARVED


def test_no_answer_after_the_services_whole_timeout_fails_however_late_the_loop():
    """Sent at 0.1, nothing in at 5.0 (the loop 4 s late): the service had its 1 s."""
    assert step(5.0, 1.0, False, 0.1) is Step.CUT
    assert step(1.1, 1.1, False, 0.1) is Step.CUT  # and on time


def test_no_answer_yet_waits_until_the_service_had_its_whole_timeout():
    """The loop ran late before the request went out (sent at 2.0, the timer due at 1.0
    fires at 2.05): the service is owed until 3.0."""
    assert decide(2.05, 1.0, DEADLINE, TIMEOUT, False, 2.0) == (Step.WAIT, 3.0)


def test_an_answer_in_gets_graces_while_the_loop_is_late_then_no_verdict():
    now = 1.0 + base.MAX_BLIND_S - 0.5  # longer than LATE_CAP, within MAX_BLIND_S
    assert decide(now, now - 0.3, DEADLINE, TIMEOUT, True, 0.1) == (
        Step.GRACE,
        now + base.LATE_GRACE,
    )
    later = DEADLINE + base.MAX_BLIND_S + 0.1
    assert step(later, later - 0.3, True, 0.1) is Step.UNREAD  # never a failure


def test_an_answer_trickling_in_while_the_loop_keeps_time_is_cut_at_the_cap():
    assert step(1.2, 1.2, True, 0.1) is Step.GRACE  # read within the grace
    on_time = DEADLINE + base.LATE_CAP + 0.1
    assert step(on_time, on_time, True, 0.1) is Step.CUT


def test_nerves_own_steps_after_an_answer_get_the_grace():
    """Connected, nothing asked yet (sent_at None): what is left is nerve's own work."""
    assert step(1.5, 1.0, True, None) is Step.GRACE


class _HungNoted(BaseCheck):
    """Its "service" got the request (noted as sent) and never answers; the kernel is
    asked nothing (no socket in this tier): ``Inflight.answered`` is patched."""

    async def probe(self) -> Passed:
        noted = PROBE.get()
        assert noted is not None
        noted.sent_at = asyncio.get_running_loop().time()
        await asyncio.get_running_loop().create_future()
        raise AssertionError("unreachable")


async def test_a_hung_service_behind_a_late_loop_fails_at_its_first_round(
    monkeypatch: pytest.MonkeyPatch,
):
    """Before, such a round gave no verdict (starved) for MAX_BLIND_S of rounds."""
    monkeypatch.setattr(Inflight, "answered", lambda self: False)
    lag_loop(0.1, 2.0)
    result = await _HungNoted("t", 0.05).run()
    assert result.verdict and not result.ok, result.detail
    assert result.detail == "timed out after 0.05s"


async def test_an_answer_nerve_cannot_read_never_fails(monkeypatch: pytest.MonkeyPatch):
    """Answered (the kernel says so) but the loop stays late past MAX_BLIND_S (here 0.3 s)
    for rounds in a row: no verdict each time; before, failures once 0.3 s had passed."""
    monkeypatch.setattr(Inflight, "answered", lambda self: True)
    monkeypatch.setattr(base, "MAX_BLIND_S", 0.3)
    lag_loop(0.1, 2.0)
    check = _HungNoted("t", 0.05)
    results = [await check.run() for _ in range(3)]
    assert [(r.verdict, r.detail) for r in results] == [(False, base.UNREAD)] * 3
