"""The reload gate: when a needed reload may run (pure: a fake clock, a fixed random)."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry

from synapse.haproxy.failures import Failures
from synapse.haproxy.metrics import HAProxyMetrics
from synapse.haproxy.ops import Reload
from synapse.haproxy.pending import PendingReload
from synapse.haproxy.reload_gate import MAX_BACKOFF, GateDecision, ReloadGate
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
