"""After nerve stalled (SIGSTOP, a VM pause) longer than its session or lease, the lost
registration waits for a fresh check round that passes; a fresh failure withdraws at once.
Pure logic and a fake clock: a scripted check, a reporter that only records."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
from nerve_fakes import Recorder

from nerve.checks.base import CheckResult
from nerve.freshness import Freshness, stale_after
from nerve.service import Service


def test_stale_after_allows_the_slowest_normal_cadence() -> None:
    assert stale_after(0.5, [1.0, 2.0]) == 5.0
    assert stale_after(2.0, []) == 4.0


def test_a_gap_between_rounds_makes_the_verdict_stale_until_a_fresh_round_passes() -> None:
    fresh = Freshness(limit=3.0, verdict_at=0.0)
    assert fresh.round_done(0.0, 0.01, passed=True) is None
    assert fresh.check(2.9) is None  # an ordinary age: acted on
    assert fresh.seen(23.0) == 23.0  # stalled 20 s: seen once ...
    assert fresh.seen(23.1) is None  # ... logged once
    assert fresh.check(23.1) == 23.0 and fresh.fresh_round
    assert fresh.round_started(23.2) is None  # (already seen)
    assert fresh.round_done(23.2, 23.3, passed=False) == "failed"
    assert fresh.check(23.4) is not None  # a failed fresh round vouches for nothing
    assert fresh.round_done(23.8, 23.9, passed=True) == "confirmed"
    assert fresh.check(24.0) is None and not fresh.fresh_round


def test_a_round_that_straddled_the_stall_is_no_fresh_verdict() -> None:
    fresh = Freshness(limit=3.0, verdict_at=0.0)
    assert fresh.round_started(0.5) is None
    assert fresh.round_done(0.5, 20.5, passed=True) == "straddled"  # begun before the stall
    assert fresh.check(20.6) == 20.0
    assert fresh.round_started(20.6) is None
    assert fresh.round_done(20.6, 20.7, passed=True) == "confirmed"


def test_a_stall_seen_when_the_round_starts() -> None:
    fresh = Freshness(limit=3.0, verdict_at=0.0)
    assert fresh.round_started(60.0) == 60.0
    assert fresh.fresh_round


class Check:
    type, name, timeout = "scripted", "http", 1.0

    def __init__(self) -> None:
        self.ok = True

    async def run(self) -> CheckResult:
        return CheckResult(self.ok, "scripted", 0.0)

    async def close(self) -> None:
        pass


class Registry(Recorder):
    """A registry that holds what it is told; ``lost`` drops it (session expired)."""

    async def _register(self) -> bool:
        self.registered = True
        return True

    async def _withdraw(self) -> bool:
        self.registered = False
        return True


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [1000.0]
    monkeypatch.setattr("nerve.service.time", SimpleNamespace(monotonic=lambda: now[0],
                        time=time.time))  # fmt: skip
    return now


async def registered_service(check: Check) -> tuple[Service, Registry]:
    registry = Registry()
    service = Service("web", [check], [(2, 2)], registry, check_interval=0.5)
    for _ in range(2):
        await service.run_round()
    await registry._reconcile()
    assert registry.registered and service.state.registered
    return service, registry


async def test_a_session_lost_without_a_stall_is_written_back_at_once(clock: list[float]) -> None:
    _service, registry = await registered_service(Check())
    clock[0] += 1.0  # an ordinary round later
    registry.mark_lost()
    await registry._reconcile()
    assert registry.registered


async def test_after_a_stall_a_dead_service_is_never_written_back(clock: list[float]) -> None:
    check = Check()
    service, registry = await registered_service(check)
    clock[0] += 20.0  # nerve frozen past its session; the service died meanwhile
    check.ok = False
    registry.mark_lost()
    await registry._reconcile()
    assert not registry.registered and registry._waits_for_checks  # no write on the old verdict
    await service.run_round()  # the fresh round fails: withdrawn at once, not after fall 2
    assert not service.state.registered and registry.decisions[-1] is False
    await registry._reconcile()
    assert not registry.registered


async def test_after_a_stall_a_live_service_is_back_after_one_fresh_round(
    clock: list[float],
) -> None:
    service, registry = await registered_service(Check())
    clock[0] += 20.0
    registry.mark_lost()
    await registry._reconcile()
    assert not registry.registered
    await service.run_round()  # one passing round suffices: it was up and never fell
    assert registry._dirty.is_set()  # woken for the write
    await registry._reconcile()
    assert registry.registered


async def test_a_stall_with_the_registration_standing_fails_the_service_at_once(
    clock: list[float],
) -> None:
    check = Check()
    service, _registry = await registered_service(check)
    clock[0] += 5.0  # frozen, but shorter than the session: the node is still there
    check.ok = False
    await service.run_round()
    assert not service.state.registered  # one fresh failure, not fall=2
