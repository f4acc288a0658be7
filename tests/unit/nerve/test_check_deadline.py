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


def step(
    now: float, due: float, answered: bool | None, sent_at: float | None, was_late: bool = False
) -> Step:
    return decide(now, due, DEADLINE, TIMEOUT, answered, sent_at, was_late)[0]


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
    now = 1.0 + base.LATE_CAP - 0.5
    assert decide(now, now - 0.3, DEADLINE, TIMEOUT, True, 0.1) == (
        Step.GRACE,
        now + base.LATE_GRACE,
    )
    later = DEADLINE + base.LATE_CAP + 0.1
    assert step(later, later - 0.3, True, 0.1) is Step.UNREAD  # no verdict (MAX_BLIND_S)


def test_an_answer_trickling_in_while_the_loop_keeps_time_is_cut_after_one_grace():
    """Before, a punctual loop kept grazing a trickling answer up to LATE_CAP (1 s) on."""
    assert step(1.0, 1.0, True, 0.1) is Step.GRACE  # in at the deadline: read within a grace
    graced = DEADLINE + base.LATE_GRACE
    assert step(graced, graced, True, 0.1) is Step.CUT


def test_a_loop_that_keeps_time_cuts_the_whole_check_at_its_timeout():
    """Sent (a request after a slow TLS handshake) 0.8 s into a 1 s timeout, the timer on
    time: the check is cut at start + timeout, as before the deadline looked at sockets.
    Before, the service got its timeout again from the request (up to ~3x in all)."""
    assert step(1.0, 1.0, False, 0.8) is Step.CUT
    # A timer late at an earlier look: the loop may have sent late, the send counts.
    assert decide(1.0, 1.0, DEADLINE, TIMEOUT, False, 0.8, True) == (Step.WAIT, 1.8)


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


async def test_unread_rounds_give_no_verdict_for_max_blind_s_then_fail(
    monkeypatch: pytest.MonkeyPatch,
):
    """Answered (so the probe says) but never read while the loop stays late (here
    LATE_CAP 0.2 s, MAX_BLIND_S 1.5 s): no verdict, then failures, as starved
    rounds. Before, UNREAD rounds never counted: a service that sent part of a reply and
    hung stayed registered as long as the loop stayed late."""
    monkeypatch.setattr(Inflight, "answered", lambda self: True)
    monkeypatch.setattr(base, "LATE_CAP", 0.2)
    monkeypatch.setattr(base, "MAX_BLIND_S", 1.5)
    lag_loop(0.1, 20.0)
    check = _HungNoted("t", 0.05)
    results = [await check.run() for _ in range(6)]
    assert (results[0].verdict, results[0].detail) == (False, base.UNREAD)
    assert results[-1].verdict and not results[-1].ok, results[-1].detail
    assert results[-1].detail.startswith("timed out after 0.05s (nerve's event loop ran late")


async def test_a_deadline_whose_look_raises_still_cuts_the_probe(
    monkeypatch: pytest.MonkeyPatch,
):
    """Before, an exception in the timer's callback left the probe uncut for ever."""

    def broken(self: Inflight) -> bool:
        raise OSError("poll failed")

    monkeypatch.setattr(Inflight, "answered", broken)
    result = await asyncio.wait_for(_HungNoted("t", 0.05).run(), 5)
    assert result.verdict and not result.ok and result.detail == "timed out after 0.05s"
