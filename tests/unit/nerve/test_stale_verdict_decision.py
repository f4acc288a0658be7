"""After nerve stalled (SIGSTOP, a VM pause) longer than its session or lease, the lost
registration waits for a fresh check round that passes; failures count towards `fall` as
always. Pure logic and a fake clock: a scripted check, a reporter that only records."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
from nerve_fakes import Recorder

from nerve.checks.base import CheckResult
from nerve.freshness import Freshness, silence_behind_loss, stale_after
from nerve.service import Service
from nerve.silence import Silence, SilenceWatch


def test_stale_after_allows_the_slowest_normal_cadence() -> None:
    assert stale_after(0.5, [1.0, 2.0]) == 5.0
    assert stale_after(2.0, []) == 4.0


def test_a_gap_between_rounds_makes_the_verdict_stale_until_a_fresh_round_passes() -> None:
    fresh = Freshness(limit=3.0, verdict_at=0.0, rounds=3)
    assert fresh.round_done(0.0, 0.01, passed=True, down=False) is None
    assert fresh.check(2.9) is None  # an ordinary age: acted on
    assert fresh.seen(23.0) == 23.0  # stalled 20 s: seen once ...
    assert fresh.seen(23.1) is None  # ... logged once
    assert fresh.check(23.1) == 23.0
    assert fresh.round_started(23.2) is None  # (already seen)
    assert fresh.round_done(23.2, 23.3, passed=False, down=False) == "failed"
    assert fresh.check(23.4) is not None  # a failed fresh round vouches for nothing
    assert fresh.round_done(23.8, 23.9, passed=True, down=False) == "confirmed"
    assert fresh.check(24.0) is None


def test_a_stall_ends_when_the_service_goes_down_or_after_max_rise_fall_rounds() -> None:
    fresh = Freshness(limit=3.0, verdict_at=0.0, rounds=3)
    assert fresh.check(30.0) == 30.0
    assert fresh.round_done(30.0, 30.1, passed=False, down=True) == "down"  # rise decides now
    assert fresh.check(30.2) is None
    assert fresh.check(60.0) == 30.0  # another stall
    for start in (60.0, 60.5):  # a check without a verdict: not passed, not down
        assert fresh.round_done(start, start + 0.1, passed=False, down=False) == "failed"
    assert fresh.round_done(61.0, 61.1, passed=False, down=False) == "expired"
    assert fresh.check(61.2) is None  # no verdict keeps the state, stall or not


def test_a_stall_is_carried_over_to_a_successor() -> None:
    fresh = Freshness(limit=3.0, verdict_at=50.0, rounds=2)
    fresh.carry(None)
    assert fresh.check(50.1) is None
    fresh.carry(20.0)
    assert fresh.check(50.1) == 20.0


def test_a_round_that_straddled_the_stall_is_no_fresh_verdict() -> None:
    fresh = Freshness(limit=3.0, verdict_at=0.0)
    assert fresh.round_started(0.5) is None
    assert fresh.round_done(0.5, 20.5, True, down=False) == "straddled"  # begun before the stall
    assert fresh.check(20.6) == 20.0
    assert fresh.round_started(20.6) is None
    assert fresh.round_done(20.6, 20.7, passed=True, down=False) == "confirmed"


def test_a_freeze_long_enough_to_lose_the_registration_after_the_verdict() -> None:
    # A 2 s lease goes after ~5/6 of it in silence: a freeze of 2/3 of it or more, seen by
    # the loop's ticks, that ended after the verdict's round began makes the verdict stale.
    watch = SilenceWatch()
    for now in (10.0, 10.25, 10.5, 12.0, 12.25):  # frozen 10.5 → 12.0 (1.5 s)
        watch.tick(now)
    lost = ShortLease()
    lost.lost_at = 12.1
    assert silence_behind_loss(10.2, lost, watch) == Silence(12.0, 1.5)
    assert silence_behind_loss(12.1, lost, watch) is None  # its round began after the freeze
    lost.lost_at = None  # never lost
    assert silence_behind_loss(10.2, lost, watch) is None
    held = Registry()  # held for ever (a persistent node)
    held.lost_at = 12.1
    assert silence_behind_loss(10.2, held, watch) is None
    shorter = SilenceWatch()
    for now in (10.0, 11.2, 11.45):  # 1.2 s: under 2/3 of the lease, it cost nothing
        shorter.tick(now)
    assert silence_behind_loss(10.2, lost, shorter) is None and shorter.silences


def test_a_round_begun_before_a_stall_seen_by_the_loss_is_no_fresh_verdict() -> None:
    fresh = Freshness(limit=3.0, verdict_at=9.0)
    fresh.stall_at(2.2, now=11.2)  # seen by silence_behind_loss: shorter than the limit
    assert fresh.round_done(9.5, 11.3, passed=True, down=False) == "straddled"
    assert fresh.check(11.4) is not None
    assert fresh.round_done(11.4, 11.5, passed=True, down=False) == "confirmed"
    assert fresh.check(11.6) is None


def test_a_stall_seen_when_the_round_starts() -> None:
    fresh = Freshness(limit=3.0, verdict_at=0.0)
    assert fresh.round_started(60.0) == 60.0
    assert fresh.stalled == 60.0


class Check:
    type, timeout = "scripted", 1.0

    def __init__(self, name: str = "http") -> None:
        self.name, self.ok, self.verdict = name, True, True

    async def run(self) -> CheckResult:
        return CheckResult(self.ok, "scripted", 0.0, verdict=self.verdict)

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
def silence(monkeypatch: pytest.MonkeyPatch) -> SilenceWatch:
    """The loop's ticks, given by the test (no ticker runs here)."""
    watch = SilenceWatch()
    monkeypatch.setattr("nerve.service.SILENCE", watch)
    return watch


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [1000.0]
    fake = SimpleNamespace(monotonic=lambda: now[0], time=time.time)
    monkeypatch.setattr("nerve.service.time", fake)
    monkeypatch.setattr("nerve.reporters.base.time", fake)  # (mark_lost's lost_at)
    return now


class ShortLease(Registry):
    """A registry dropping a silent nerve's registration after 2 s (a 2 s etcd lease)."""

    def hold_s(self) -> float | None:
        return 2.0


async def registered_service(
    *checks: Check, registry: Registry | None = None
) -> tuple[Service, Registry]:
    registry = registry or Registry()
    service = Service("web", checks, [(2, 2)] * len(checks), registry, check_interval=0.5)
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
    await service.run_round()  # one fresh failure of fall 2: still up, still not written
    assert service.state.registered and registry.decisions[-1] is True
    await registry._reconcile()
    assert not registry.registered and registry._waits_for_checks
    clock[0] += 0.5
    await service.run_round()  # the second: down after fall, as always; never written
    assert not service.state.registered and registry.decisions[-1] is False
    await registry._reconcile()
    assert not registry.registered


async def test_a_freeze_past_a_short_lease_but_under_the_limit_writes_nothing_back(
    clock: list[float], silence: SilenceWatch
) -> None:
    """Round 31's left-alone window: a 2 s lease, rounds every 0.5 s with a 1 s timeout
    (limit 3 s); nerve frozen 2.2 s, its service dead meanwhile (was: written back at once
    on the verdict from before the freeze, until `fall` failures withdrew it)."""
    check = Check()
    service, registry = await registered_service(check, registry=ShortLease())
    silence.tick(clock[0])
    clock[0] += 2.2
    silence.tick(clock[0])  # the loop's first tick after the freeze
    check.ok = False
    registry.mark_lost()
    await registry._reconcile()
    assert not registry.registered and registry._waits_for_checks
    await service.run_round()  # one fresh failure of fall 2: still up, still not written
    await registry._reconcile()
    assert not registry.registered
    clock[0] += 0.5
    await service.run_round()
    assert not service.state.registered and registry.decisions[-1] is False


async def test_a_loss_without_a_freeze_is_written_back_at_once_however_old_the_verdict(
    clock: list[float], silence: SilenceWatch
) -> None:
    """Review s32: a verdict older than 2/3 of the lease (2.75 s of a 2 s lease, under the
    3 s limit: rounds far apart or slow) and an ordinary outage: judged by the verdict's age
    it waited for another round (a minute with check_interval 60)."""
    _service, registry = await registered_service(Check(), registry=ShortLease())
    for _ in range(11):  # the loop ticked all along
        clock[0] += 0.25
        silence.tick(clock[0])
    registry.mark_lost()
    await registry._reconcile()
    assert registry.registered


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


async def test_after_a_stall_a_slow_first_check_then_a_pass_writes_it_back(
    clock: list[float],
) -> None:
    check = Check()
    service, registry = await registered_service(check)
    clock[0] += 20.0  # the host resumes: its backends are slow at first
    registry.mark_lost()
    check.ok = False  # the first check times out
    await service.run_round()
    await registry._reconcile()
    assert not registry.registered and service.state.registered  # held, not down
    check.ok = True
    clock[0] += 0.5
    await service.run_round()  # the next round passes: back now, not after rise
    await registry._reconcile()
    assert registry.registered


async def test_a_stall_with_the_registration_standing_keeps_fall(clock: list[float]) -> None:
    check = Check()
    service, registry = await registered_service(check)
    clock[0] += 5.0  # frozen, but shorter than the session: the node is still there
    check.ok = False  # the first check after the resume is slow
    await service.run_round()
    assert service.state.registered and registry.decisions[-1] is True  # fall is 2
    check.ok = True
    clock[0] += 0.5
    await service.run_round()
    await registry._reconcile()
    assert registry.registered and registry.decisions[-1] is True  # never withdrawn


async def test_a_check_without_a_verdict_holds_the_stall_only_max_rise_fall_rounds(
    clock: list[float],
) -> None:
    a, b = Check("a"), Check("b")
    service, registry = await registered_service(a, b)
    clock[0] += 20.0  # past the session
    registry.mark_lost()
    b.verdict = False  # b gives no verdict (nerve at its fd limit)
    await service.run_round()
    await registry._reconcile()
    assert not registry.registered  # held: the fresh round did not see every check
    clock[0] += 0.5
    await service.run_round()  # max(rise 2, fall 2) fresh rounds: the stall ends
    assert service.freshness.stalled is None
    await registry._reconcile()
    assert registry.registered  # no verdict keeps the state, as without a stall
    a.ok = False  # one failure later: fall applies, not at once
    clock[0] += 0.5
    await service.run_round()
    assert service.state.registered


async def test_a_reload_keeping_the_reporter_carries_the_stall_over(clock: list[float]) -> None:
    check = Check()
    service, registry = await registered_service(check)
    clock[0] += 20.0  # stall past the session; the service died meanwhile
    check.ok = False
    await service.halt()  # a SIGHUP reload that kept the reporter (the checks changed)
    successor = Service("web", [check], [(2, 2)], registry, check_interval=0.5, initially_up=True)
    registry.mark_lost()
    await registry._reconcile()
    assert not registry.registered  # not written back on the verdict from before the stall
    await successor.run_round()
    clock[0] += 0.5
    await successor.run_round()  # down after fall: never written
    await registry._reconcile()
    assert not registry.registered and not successor.state.registered


async def test_a_reload_between_a_short_freeze_and_the_loss_still_holds(
    clock: list[float], silence: SilenceWatch
) -> None:
    """Review s32: a checks-only SIGHUP handled after the resume but before the loss was
    seen: the successor's verdict began after the freeze, and it wrote the registration back
    on the predecessor's pre-freeze verdict. The predecessor's verdict time is carried."""
    check = Check()
    service, registry = await registered_service(check, registry=ShortLease())
    silence.tick(clock[0])
    clock[0] += 2.2  # frozen past the 2 s lease, under the limit; the service died meanwhile
    silence.tick(clock[0])
    check.ok = False
    clock[0] += 0.05
    await service.halt()  # the queued SIGHUP runs first: the reporter is kept
    Service("web", [check], [(2, 2)], registry, check_interval=0.5, initially_up=True)
    registry.mark_lost()
    await registry._reconcile()
    assert not registry.registered and registry._waits_for_checks
