"""The pure parts: rise/fall counters, the registration state machine, the token bucket."""

from __future__ import annotations

import pytest

from nerve.ratelimit import TokenBucket
from nerve.state import CheckTracker, Observation, ServiceState


def ok(name: str = "c") -> Observation:
    return Observation(name, True, "fine")


def bad(name: str = "c", detail: str = "HTTP 503") -> Observation:
    return Observation(name, False, detail)


def feed(state: ServiceState, rounds: list[list[Observation]], now: float = 0.0) -> list:
    """Transitions produced by a sequence of rounds (one per second)."""
    out = []
    for i, results in enumerate(rounds):
        decision = state.observe(results, now + i)
        if decision.transition is not None:
            out.append((i, decision.transition.registered))
    return out


def test_tracker_needs_rise_consecutive_passes_and_fall_consecutive_failures() -> None:
    tracker = CheckTracker(rise=3, fall=2)
    assert [tracker.observe(True, "") for _ in range(3)] == [False, False, True]
    assert tracker.up
    # One failure between passes resets nothing while up; fall needs consecutive failures.
    assert tracker.observe(False, "x") is False
    assert tracker.observe(True, "") is False
    assert tracker.observe(False, "x") is False
    assert tracker.observe(False, "x") is True
    assert not tracker.up
    # A pass interrupts the rise streak.
    assert [tracker.observe(r, "") for r in (True, True, False, True, True)] == [False] * 5
    assert tracker.observe(True, "") is True


def test_starts_unregistered_and_registers_after_rise_passes_of_every_check() -> None:
    state = ServiceState.create([("a", 2, 1), ("b", 1, 1)])
    assert not state.registered
    transitions = feed(state, [[ok("a"), bad("b")], [ok("a"), ok("b")], [ok("a"), ok("b")]])
    # Round 1: "a" reached rise=2, "b" came up at once: registered then, exactly once.
    assert transitions == [(1, True)]
    assert state.registered


def test_withdraws_after_fall_failures_with_one_transition_and_a_reason() -> None:
    state = ServiceState.create([("web", 1, 2)])
    assert feed(state, [[ok("web")]]) == [(0, True)]
    first = state.observe([bad("web")], 10)
    second = state.observe([bad("web", "HTTP 500")], 11)
    third = state.observe([bad("web")], 12)
    assert first.transition is None
    assert second.transition is not None and second.transition.registered is False
    assert "web" in second.transition.reason and "HTTP 500" in second.transition.reason
    assert third.transition is None  # exactly one write per transition


def test_a_check_rising_again_says_how_far_and_its_last_failure() -> None:
    """Not its last, passing, result as the reason it is down (review s36 observe)."""
    state = ServiceState.create([("web", 3, 1)])
    assert state.reason() == "check web down (not checked yet)"
    feed(state, [[ok("web")]])
    assert state.reason() == "check web rising (1 of 3 passes)"
    feed(state, [[ok("web")], [ok("web")], [bad("web", "HTTP 503")], [ok("web")], [ok("web")]])
    assert state.reason() == "check web rising (2 of 3 passes; last failure: HTTP 503)"
    feed(state, [[bad("web", "connection refused")]])
    assert state.reason() == "check web down (connection refused)"


def test_service_without_checks_registers_on_first_round() -> None:
    state = ServiceState.create([])
    assert feed(state, [[]]) == [(0, True)]
    assert state.reason() == "no checks configured"


def test_maintenance_withdraws_at_once_and_up_registers_only_when_healthy() -> None:
    state = ServiceState.create([("c", 1, 3)])
    feed(state, [[ok()]])
    decision = state.set_maintenance("admin", "kernel upgrade", 5)
    assert decision.transition is not None and not decision.transition.registered
    assert "kernel upgrade" in decision.transition.reason
    # Still in maintenance: healthy rounds do not register.
    assert feed(state, [[ok()], [ok()]], now=6) == []
    # Checks fail during maintenance, then maintenance ends: stays withdrawn.
    feed(state, [[bad()], [bad()], [bad()]], now=8)
    assert state.set_maintenance("admin", None, 11).transition is None
    assert feed(state, [[ok()]], now=12) == [(0, True)]


def test_two_maintenance_sources_both_must_clear() -> None:
    state = ServiceState.create([])
    feed(state, [[]])
    state.set_maintenance("admin", "a", 1)
    state.set_maintenance("maintenance_file", "f exists", 1)
    assert state.set_maintenance("admin", None, 2).transition is None
    decision = state.set_maintenance("maintenance_file", None, 3)
    assert decision.transition is not None and decision.transition.registered


def test_initially_up_keeps_a_reloaded_service_registered_until_fall_failures() -> None:
    state = ServiceState.create([("c", 3, 2)], initially_up=True)
    state.registered = True
    assert feed(state, [[ok()], [bad()]]) == []
    assert feed(state, [[bad()]]) == [(0, False)]


def test_rate_limiting_holds_changes_back_and_retries_them() -> None:
    bucket = TokenBucket(average_rate=0.5, max_burst=1, now=0.0)
    state = ServiceState.create([("c", 1, 1)], bucket, shadow_mode=False)
    assert state.observe([ok()], 0.0).transition is not None  # the one initial token
    held = state.observe([bad()], 0.5)
    assert held.transition is None and held.throttled and not held.shadow
    assert state.registered  # the change waits...
    later = state.observe([bad()], 2.0)  # ...until a token refilled (0.5/s x 2 s = 1)
    assert later.transition is not None and not later.transition.registered


def test_rate_limiting_shadow_mode_only_reports() -> None:
    bucket = TokenBucket(average_rate=0.1, max_burst=1, now=0.0)
    state = ServiceState.create([("c", 1, 1)], bucket, shadow_mode=True)
    state.observe([ok()], 0.0)
    decision = state.observe([bad()], 0.1)
    assert decision.transition is not None and decision.throttled and decision.shadow


def test_maintenance_is_never_rate_limited() -> None:
    bucket = TokenBucket(average_rate=0.01, max_burst=1, now=0.0)
    state = ServiceState.create([], bucket, shadow_mode=False)
    state.observe([], 0.0)  # uses the only token
    decision = state.set_maintenance("admin", "now", 0.1)
    assert decision.transition is not None and not decision.throttled


def test_token_bucket_refills_whole_tokens_up_to_max_burst() -> None:
    bucket = TokenBucket(average_rate=2, max_burst=3, now=0.0)
    assert [bucket.consume(0.0) for _ in range(3)] == [True, True, False]
    assert bucket.consume(0.4) is False  # 0.8 tokens: nothing whole yet
    assert bucket.consume(0.6) is True  # 1.2 tokens since the last refill
    assert [bucket.consume(100.0) for _ in range(4)] == [True, True, True, False]  # capped


def test_token_bucket_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        TokenBucket(average_rate=0, max_burst=1, now=0)
    with pytest.raises(ValueError):
        TokenBucket(average_rate=1, max_burst=0.5, now=0)
