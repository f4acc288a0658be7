"""The reload gate: when a needed reload may run (pure: a fake clock, a fixed random)."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry

from synapse.haproxy import pending as pending_module
from synapse.haproxy.failures import Failures
from synapse.haproxy.first_answer import AnswerLook
from synapse.haproxy.metrics import HAProxyMetrics
from synapse.haproxy.ops import Reload
from synapse.haproxy.pending import PendingReload
from synapse.haproxy.reload_gate import MAX_BACKOFF, GateDecision, ReloadGate
from synapse.haproxy.sockets import SocketUnavailable
from synapse.haproxy.status import HAProxyStatus


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def gate(interval: float = 2.0, jitter: float = 0.0, rng: float = 0.5) -> tuple[ReloadGate, Clock]:
    clock = Clock()
    return ReloadGate(interval, jitter, clock, lambda: rng), clock


RELOAD = Reload((("config", "section backend web changed"),))


def test_a_first_reload_runs_at_once() -> None:
    g, _ = gate()
    assert g.decide("cfg A") is GateDecision.RELOAD


def test_reloads_are_restart_interval_apart_and_the_waiting_one_is_the_latest() -> None:
    g, clock = gate(interval=2.0)
    g.validated(clock.now)
    g.reloaded()
    clock.now += 1.5
    assert g.decide("cfg B") is GateDecision.WAIT
    assert g.due_in() == pytest.approx(0.5)
    g.wait(RELOAD)
    later = Reload((("service_added", "backend api is not running"),))
    g.wait(later)  # coalesces: the later one includes the earlier change
    assert g.pending is later
    clock.now += 0.5
    assert g.due and g.decide("cfg C") is GateDecision.RELOAD
    assert g.take_pending() is later and g.pending is None


def test_jitter_stretches_the_interval_by_a_random_fraction() -> None:
    g, clock = gate(interval=10.0, jitter=0.5, rng=0.8)
    g.validated(clock.now)
    assert g.due_in() == pytest.approx(10.0 * (1 + 0.5 * 0.8))


def test_failures_back_off_doubling_up_to_the_cap_and_a_success_resets() -> None:
    g, clock = gate(interval=0.0)  # the backoff starts at 1 s even without an interval
    delays = [g.failed() for _ in range(8)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, MAX_BACKOFF, MAX_BACKOFF]
    assert g.decide("cfg A") is GateDecision.WAIT
    clock.now += MAX_BACKOFF
    assert g.decide("cfg A") is GateDecision.RELOAD
    g.reloaded()
    assert g.failed() == 1.0


def test_a_failure_that_costs_nothing_to_retry_backs_off_to_its_own_cap() -> None:
    """A file that could not be written (a full disk): the reload follows the space within
    seconds, not the full backoff (60 s after a long outage)."""
    g, _ = gate(interval=0.0)
    delays = [g.failed(cap=5.0) for _ in range(6)]
    assert delays == [1.0, 2.0, 4.0, 5.0, 5.0, 5.0]
    assert g.failed() == MAX_BACKOFF  # (the 7th without a cap: 64 s, capped as ever)


def test_a_managed_haproxy_that_is_down_starts_at_once_unless_starts_keep_failing() -> None:
    g, clock = gate(interval=5.0)
    g.validated(clock.now)  # a reload just happened: the next one would wait
    assert g.decide("cfg B", down=True) is GateDecision.RELOAD
    g.failed()
    assert g.decide("cfg B", down=True) is GateDecision.WAIT


def test_a_refused_candidate_is_not_tried_again_until_it_changes() -> None:
    g, clock = gate()
    g.refuse("bad cfg")
    assert g.decide("bad cfg") is GateDecision.REFUSED
    assert g.decide("bad cfg", down=True) is GateDecision.REFUSED
    assert g.decide("fixed cfg") is GateDecision.RELOAD
    g.validated(clock.now)  # a valid candidate clears the refusal
    assert g.refused is None


def test_a_settled_candidate_waits_for_the_next_change_unless_haproxy_is_down() -> None:
    g, _ = gate()
    g.settle("cfg A")
    assert g.decide("cfg A") is GateDecision.SETTLED
    assert g.decide("cfg A", down=True) is GateDecision.RELOAD
    assert g.decide("cfg B") is GateDecision.RELOAD
    g.settle(None)
    assert g.decide("cfg A") is GateDecision.RELOAD


def test_no_reload_needed_forgets_the_refusal_and_the_waiting_reload() -> None:
    g, _ = gate()
    g.refuse("bad cfg")
    g.wait(RELOAD)
    g.no_reload_needed()
    assert g.refused is None and g.pending is None


def test_a_new_haproxy_block_gives_every_candidate_a_new_chance_and_new_limits() -> None:
    g, clock = gate(interval=2.0)
    g.refuse("bad cfg")
    g.settle("cfg A")
    g.configure(restart_interval=7.0, restart_jitter=0.0)
    assert g.decide("bad cfg") is GateDecision.RELOAD
    assert g.decide("cfg A") is GateDecision.RELOAD
    g.validated(clock.now)
    assert g.due_in() == pytest.approx(7.0)


async def test_the_retry_of_a_failed_reload_is_counted_from_when_the_attempt_ended() -> None:
    """A reload command that hung for its whole reload_timeout (10 s): the retry comes the
    backoff after it gave up, not at once (the backoff counted from its start was spent)."""
    g, clock = gate(interval=0.5)
    pending = PendingReload(
        g, asyncio.Lock(), lambda: asyncio.sleep(0), HAProxyMetrics(CollectorRegistry())
    )
    failures = Failures(HAProxyStatus(), pending.metrics, g, pending, lambda: None)
    began = clock.now
    clock.now += 10.0  # (the attempt ran out its reload_timeout)
    failures.reload_failed("reload_command timed out after 10.0s", RELOAD, began)
    assert g.decide("cfg A") is GateDecision.WAIT
    assert g.due_in() == pytest.approx(1.0)
    await pending.cancel()


def failed_often(g: ReloadGate, times: int) -> float:
    """``times`` failed reloads in a row (a long outage); the last backoff."""
    return [g.failed() for _ in range(times)][-1]


def test_haproxys_first_answer_after_a_silence_makes_the_grown_backoff_due_at_once() -> None:
    """After a long outage (a stopped master) the retry waited out its grown backoff (16 s
    here, up to 60 s) once HAProxy answered again; now its first answer makes it due, once."""
    g, clock = gate(interval=0.0)
    assert failed_often(g, 5) == 16.0
    clock.now += 1.0
    assert not g.heard(False)  # still silent
    assert g.decide("cfg A") is GateDecision.WAIT
    clock.now += 1.0
    assert g.heard(True)
    assert g.decide("cfg A") is GateDecision.RELOAD and g.due_in() == 0.0
    g.failed()  # that retry failed too: the backoff goes on growing
    assert g.due_in() == 32.0
    clock.now += 1.0
    assert not g.heard(True)  # once: no new silence since
    assert g.due_in() == 31.0


def test_a_silence_seen_before_the_last_attempt_still_counts() -> None:
    """HAProxy came back right after an attempt failed (before the next look): its first
    answer after that still brings the retry forward."""
    g, clock = gate(interval=0.0)
    failed_often(g, 4)
    assert not g.heard(False)
    clock.now += 8.0
    g.failed()  # (still stopped: it ran out its timeout)
    clock.now += 1.0
    assert g.heard(True) and g.due


def test_a_reload_that_fails_while_haproxy_answers_keeps_its_backoff() -> None:
    """b593750's case: the reload_command hangs for its whole timeout while HAProxy answers
    every look: the retries stay 1, 2, 4, 8 s after each attempt ended, never back to back."""
    g, clock = gate(interval=0.5)
    waits = []
    for _ in range(4):
        clock.now += 10.0  # (an attempt that hung for reload_timeout)
        g.failed()
        for _ in range(3):
            clock.now += 0.25
            assert not g.heard(True)
        waits.append(g.due_in() + 0.75)
    assert waits == [1.0, 2.0, 4.0, 8.0]


def test_the_first_answer_does_not_bring_a_retry_closer_than_the_first_backoff_step() -> None:
    """A HAProxy that flaps (silent, answering, silent...) gets one retry per silence, and
    never sooner than max(restart_interval, 1 s) after the last attempt ended."""
    g, clock = gate(interval=3.0)
    failed_often(g, 3)  # 12 s
    clock.now += 0.5
    g.heard(False)
    clock.now += 0.5
    assert g.heard(True)
    assert g.due_in() == pytest.approx(2.0)  # 3 s after the failure, not now
    assert not g.heard(False)  # a new silence, a new answer: nothing sooner than that
    assert not g.heard(True)
    assert g.due_in() == pytest.approx(2.0)


def test_an_answer_means_nothing_without_a_failure_and_a_success_ends_the_silence() -> None:
    g, clock = gate(interval=5.0)
    g.validated(clock.now)  # rate limited, no failure: HAProxy is fine
    assert not g.heard(False) and not g.heard(True)
    assert g.due_in() == 5.0
    g.failed()
    g.heard(False)
    g.reloaded()  # (the outage is over)
    failed_often(g, 3)
    assert not g.heard(True)


async def test_the_pending_retry_looks_at_haproxy_and_goes_at_its_first_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The pending task looks while a failed reload waits (every LOOK_PERIOD, shortened
    here): refused, refused, answering: the retry runs then (1 s, the backoff's first
    step, after the failure), not after its 16 s backoff."""
    monkeypatch.setattr(pending_module, "LOOK_PERIOD", 0.01)
    loop = asyncio.get_running_loop()
    g = ReloadGate(0.0, 0.0, loop.time, lambda: 0.5)
    answers = iter([False, False, True])
    asked: list[bool] = []

    async def ask() -> None:
        asked.append(next(answers, True))
        if not asked[-1]:
            raise SocketUnavailable("connection refused")

    applied = asyncio.Event()

    async def apply() -> None:
        applied.set()

    metrics = HAProxyMetrics(CollectorRegistry())
    pending = PendingReload(g, asyncio.Lock(), apply, metrics, AnswerLook(ask))
    failed_often(g, 4)
    began = loop.time()  # before the failure: the 1 s counts from it (after it, 0.99996 s)
    Failures(HAProxyStatus(), metrics, g, pending, lambda: None).reload_failed(
        "no answer", RELOAD, None
    )
    assert g.due_in() > 15.0
    await asyncio.wait_for(applied.wait(), 5.0)
    assert 1.0 <= loop.time() - began < 3.0
    assert asked[:3] == [False, False, True] and all(asked[3:])
    await pending.cancel()


async def test_a_look_that_gets_no_answer_keeps_its_one_question_asked() -> None:
    """A stopped HAProxy queues connections and answers none: each look waits for the one
    question asked (a new connection a second filled a stopped master's accept queue, 11,
    within 20 s: the reload's own connection was then refused); its answer comes at once
    when HAProxy runs again."""
    release = asyncio.Event()
    asked = 0

    async def ask() -> None:
        nonlocal asked
        asked += 1
        await release.wait()

    look = AnswerLook(ask)
    assert [await look.answers(0.01) for _ in range(3)] == [False, False, False]
    assert asked == 1
    release.set()
    assert await look.answers(1.0) and asked == 1
    assert await look.answers(1.0) and asked == 2  # (a new question after an answer)
    release.clear()
    assert not await look.answers(0.01)
    look.drop()  # (the reload is done: the question is not left asked)
    assert not await look.answers(0.01) and asked == 4
    look.drop()


async def test_a_start_failing_again_is_one_error_line_whatever_haproxys_pid(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """HAProxy's lines name its pid ("[ALERT] (16345) :"): each failed start of a streak is
    the same error, logged once (before, once per retry: review s29, a read-only socket
    directory, 14 lines in a minute)."""
    g, _ = gate(interval=0.5)
    pending = PendingReload(
        g, asyncio.Lock(), lambda: asyncio.sleep(0), HAProxyMetrics(CollectorRegistry())
    )
    failures = Failures(HAProxyStatus(), pending.metrics, g, pending, lambda: None)
    caplog.set_level("DEBUG", logger="synapse.haproxy")
    for pid in (16345, 16401, 16466):
        error = f"HAProxy exited with status 1:\n[ALERT]    ({pid}) : x"
        failures.reload_failed(error, RELOAD, None)
    failures.reload_failed("HAProxy exited with status 2", RELOAD, None)
    levels = [r.levelname for r in caplog.records if r.getMessage() == "haproxy_reload_failed"]
    assert levels == ["ERROR", "DEBUG", "DEBUG", "ERROR"]
    await pending.cancel()
