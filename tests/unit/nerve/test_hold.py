"""A restarted nerve keeps a previous run's registration until its checks decide (no I/O:
a scripted check and a reporter that only records what it is told)."""

from __future__ import annotations

import asyncio
import logging

import pytest
from nerve_fakes import Recorder

from nerve.checks.base import CheckResult
from nerve.maintenance import MaintenanceFlag, MaintenanceStore
from nerve.service import Service


class ScriptedCheck:
    type = "scripted"
    timeout = 0.1

    def __init__(self, results: list[bool]) -> None:
        self.name = "scripted"
        self.results = results

    async def run(self) -> CheckResult:
        return CheckResult(self.results.pop(0), "scripted", 0.0)

    async def close(self) -> None:
        pass


async def rounds_until_decided(results: list[bool], rise: int, fall: int) -> tuple[int, bool]:
    reporter = Recorder()
    service = Service("web", [ScriptedCheck(results)], [(rise, fall)], reporter)
    assert reporter.holding and not reporter._needs_write()  # the leftover stays for now
    while reporter.holding:
        await service.run_round()
    return service.rounds, reporter.decisions[-1]


@pytest.mark.parametrize(
    "results, rise, fall, expected",
    [
        ([True] * 5, 3, 2, (3, True)),  # rise passes: register (new node first, then leftover)
        ([False] * 5, 3, 2, (1, False)),  # the first failed round withdraws (not `fall`)
        ([False] * 5, 3, 1, (1, False)),  # Airbnb's default fall 1: the same
        ([True, False, True, True, True], 3, 2, (2, False)),  # a pass vouches for nothing
    ],
)
async def test_the_hold_ends_with_the_checks_decision(
    results: list[bool], rise: int, fall: int, expected: tuple[int, bool]
) -> None:
    assert await rounds_until_decided(results, rise, fall) == expected


async def test_maintenance_at_start_withdraws_the_leftover_at_once() -> None:
    store = MaintenanceStore(None)
    store.save("web", MaintenanceFlag("disk swap", 0.0, None))
    reporter = Recorder()
    Service("web", [ScriptedCheck([True])], [(3, 2)], reporter, maintenance=store)
    assert reporter.decisions == [False] and not reporter.holding


class Unreachable(Recorder):
    """The registry is down right now (ZooKeeper disconnected at SIGTERM)."""

    def __init__(self, expires: bool) -> None:
        super().__init__()
        self.expires = expires
        self.withdrawals = 0

    def _reachable(self) -> bool:
        return False

    def _expires(self) -> bool:
        return self.expires

    async def _withdraw(self) -> bool:
        self.withdrawals += 1
        return True


@pytest.mark.parametrize(
    "tried_register, holding, expires, attempted",
    [
        (True, False, True, True),  # a create whose answer was lost: it may exist
        (False, True, False, True),  # a held persistent node: it never goes by itself
        (False, True, True, False),  # a held ephemeral leftover: it goes with its session
    ],
)
async def test_stop_tries_to_withdraw_an_unknown_registration_while_unreachable(
    tried_register: bool, holding: bool, expires: bool, attempted: bool
) -> None:
    reporter = Unreachable(expires)
    reporter.tried_register, reporter.holding = tried_register, holding
    assert reporter.uncertain and not reporter.registered
    await reporter.stop(withdraw=True)
    assert reporter.withdrawals == (1 if attempted else 0)


async def test_a_checks_only_reload_continues_the_hold_instead_of_restarting_it() -> None:
    """The reload builds a new Service on the same (holding) reporter: the rounds held so
    far count (every one passed), or the hold would outlast its bound (etcd: the old
    lease's renewal ends there, and the key with it)."""
    reporter = Recorder()
    first = Service("web", [ScriptedCheck([True, True])], [(3, 2)], reporter)
    for _ in range(2):
        await first.run_round()
    assert reporter.holding and reporter.decisions == []
    reloaded = Service("web", [ScriptedCheck([True] * 3)], [(3, 2)], reporter)
    await reloaded.run_round()  # the third pass in a row: rise 3, registered
    assert reporter.decisions == [True] and not reporter.holding


# --- a round acts on a failure as it comes, on passes once every check answered -------


class DelayedCheck:
    type = "scripted"
    timeout = 5.0

    def __init__(self, name: str, ok: bool, delay: float) -> None:
        self.name, self.ok, self.delay = name, ok, delay

    async def run(self) -> CheckResult:
        await asyncio.sleep(self.delay)
        return CheckResult(self.ok, "scripted", self.delay)

    async def close(self) -> None:
        pass


def fast_and_slow(fast_ok: bool, slow_ok: bool, reporter: Recorder, up: bool) -> Service:
    checks = [DelayedCheck("fast", fast_ok, 0.0), DelayedCheck("slow", slow_ok, 0.3)]
    return Service("web", checks, [(1, 1), (1, 1)], reporter, initially_up=up)


async def test_a_fast_failure_withdraws_before_the_slow_check_answers() -> None:
    reporter = Recorder()
    reporter.holding = False
    web = fast_and_slow(False, True, reporter, up=True)
    web.state.registered = True
    started = asyncio.get_running_loop().time()
    await web.run_round()
    assert reporter.decisions == [False]
    assert reporter.decided_at[0] - started < 0.15  # the old round waited for "slow"
    assert web.rounds == 1 and web.last_results["slow"].ok


async def test_a_fast_failure_ends_the_hold_of_a_leftover_at_once() -> None:
    reporter = Recorder()
    web = fast_and_slow(False, True, reporter, up=False)
    started = asyncio.get_running_loop().time()
    await web.run_round()
    assert reporter.decisions == [False] and not reporter.holding
    assert reporter.decided_at[0] - started < 0.15


async def test_a_pass_never_registers_before_a_slower_failure_of_its_round() -> None:
    reporter = Recorder()
    reporter.holding = False
    web = fast_and_slow(True, False, reporter, up=False)
    await web.run_round()
    assert reporter.decisions == [] and not web.state.registered  # no flap in a round


async def test_a_withdrawal_held_back_by_the_rate_limit_is_logged_once_per_round(
    caplog: pytest.LogCaptureFixture,
) -> None:
    reporter = Recorder()
    reporter.holding = False
    checks = [DelayedCheck("fast", False, 0.0), DelayedCheck("slow", True, 0.05)]
    # One token, refilled once in 1000 s: the registration took it.
    limit = (0.001, 1, False)
    web = Service("web", checks, [(1, 1)] * 2, reporter, rate_limit=limit, initially_up=True)
    web.state.registered = True
    assert web.state.bucket is not None and web.state.bucket.consume(0.0)
    caplog.set_level(logging.WARNING, logger="nerve.service")
    await web.run_round()  # the failure mid-round, then the round's end: both held back
    throttled = [r for r in caplog.records if r.getMessage() == "status_change_throttled"]
    assert len(throttled) == 1 and reporter.decisions == [] and web.state.registered
