"""A SIGHUP hand-over whose new registration is not accepted (new credentials not known to
the registry yet, a typo): the old, working registration stays until the new one is
written, however long (written again if lost meanwhile), but still goes at once when the
service turns unhealthy or enters maintenance; a registration withdrawn first holds back
its replacement only so long.
(Real etcd and ZooKeeper with auth: tests/integration/nerve/test_reload_credentials.py.)"""

from __future__ import annotations

import asyncio
import logging

import pytest
from test_handover_maint import Registries, Registry, until

import nerve.handover as handover
from nerve.checks.base import CheckResult
from nerve.handover import Retirement, after_retirement, hand_over, pass_on
from nerve.service import Service
from smartstack.logs import _FIELDS

TIMEOUT = 0.3  # HANDOVER_TIMEOUT, shortened


@pytest.fixture(autouse=True)
def short_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(handover, "HANDOVER_TIMEOUT", TIMEOUT)


class Switch:
    """A check whose verdict the test sets."""

    type = "switch"
    timeout = 0.1

    def __init__(self) -> None:
        self.name = "switch"
        self.ok = True

    async def run(self) -> CheckResult:
        return CheckResult(self.ok, "switch", 0.0)

    async def close(self) -> None:
        pass


async def registered_old() -> Service:
    old = Service("web", [], [], Registry(), check_interval=0.05, initially_up=True)
    old.start()
    await until(lambda: old.reporter.registered, 2)
    return old


def waiting_new(check: Switch | None = None) -> Service:
    """A new service whose registry does not take its write (until ``answers`` is set)."""
    checks = [check] if check is not None else []
    return Service("web", checks, [(1, 1)] * len(checks), Registry(hangs=True),
                   check_interval=0.05, initially_up=True)  # fmt: skip


async def stop(*services: Service) -> None:
    for service in services:
        await service.halt()
        await service.reporter.cancel()


async def test_the_old_registration_stays_until_the_new_one_is_written(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    old, new = await registered_old(), waiting_new()
    handing = asyncio.create_task(hand_over(old, new, Registries()))  # type: ignore[arg-type]
    await asyncio.sleep(TIMEOUT * 4)
    assert old.reporter.registered and not handing.done()  # (was: withdrawn at the timeout)
    pending = [r for r in caplog.records if r.getMessage() == "handover_pending"]
    assert len(pending) == 1 and pending[0].levelno == logging.ERROR
    new.reporter.answers.set()  # type: ignore[attr-defined]
    took = await until(lambda: not old.reporter.registered, 2)
    assert took < 0.5 and new.reporter.registered
    await asyncio.wait_for(handing, 1.0)
    resolved = [r for r in caplog.records if r.getMessage() == "handover_resolved"]
    assert [getattr(r, _FIELDS)["outcome"] for r in resolved] == ["written"]
    await stop(new)


@pytest.mark.parametrize("turn", ["unhealthy", "maintenance"])
async def test_a_waiting_hand_overs_old_registration_goes_at_once_when_the_service_turns(
    turn: str,
) -> None:
    check = Switch()
    old, new = await registered_old(), waiting_new(check)
    handing = asyncio.create_task(hand_over(old, new, Registries()))  # type: ignore[arg-type]
    await asyncio.sleep(TIMEOUT * 3)
    assert old.reporter.registered
    if turn == "unhealthy":
        check.ok = False
    else:
        new.enter_maintenance("deploy")
    took = await until(lambda: not old.reporter.registered, 2)
    assert took < 0.5
    await asyncio.wait_for(handing, 1.0)
    await stop(new)


async def test_an_old_registration_lost_meanwhile_is_written_again_and_kept(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A registry outage longer than the old lease or session during the wait: the old
    reporter writes its registration again once the registry is back, and it stays until
    the new one is written (was: retired as "old_gone", registered nowhere)."""
    caplog.set_level(logging.INFO)
    old, new = await registered_old(), waiting_new()
    handing = asyncio.create_task(hand_over(old, new, Registries()))  # type: ignore[arg-type]
    await asyncio.sleep(TIMEOUT * 2)
    outage: Registry = old.reporter  # type: ignore[assignment]
    outage.answers.clear()  # the old registry down ...
    outage.mark_lost()  # ... past the lease or session
    await asyncio.sleep(TIMEOUT * 2)
    assert not handing.done() and not old.reporter.registered
    outage.answers.set()  # back: written again
    await until(lambda: old.reporter.registered, 2)
    await asyncio.sleep(TIMEOUT * 2)
    assert old.reporter.registered and not handing.done()
    new.reporter.answers.set()  # type: ignore[attr-defined]
    await until(lambda: not old.reporter.registered, 2)
    await asyncio.wait_for(handing, 1.0)
    assert new.reporter.registered and new.predecessor is None
    resolved = [r for r in caplog.records if r.getMessage() == "handover_resolved"]
    assert [getattr(r, _FIELDS)["outcome"] for r in resolved] == ["written"]
    await stop(new)


async def test_a_reload_replacing_the_waiting_service_passes_the_wait_on() -> None:
    """A typo fixed by a second SIGHUP: the first registration waits for the third
    service's write, never withdrawn on the way."""
    old, typo = await registered_old(), waiting_new()
    handing = asyncio.create_task(hand_over(old, typo, Registries()))  # type: ignore[arg-type]
    await asyncio.sleep(TIMEOUT * 2)
    fixed = waiting_new()
    pass_on(typo, fixed)
    assert fixed.predecessor is not None and typo.predecessor is None
    assert typo.reporter.successor is old.reporter  # what old holds is not typo's to delete
    assert old.reporter.successor is fixed.reporter  # (and through it, nor what fixed puts)
    await typo.halt()
    retiring = asyncio.create_task(typo.reporter.retire())  # never answers: it goes on
    fixed.start()
    await asyncio.sleep(TIMEOUT * 2)
    assert old.reporter.registered and fixed.registered
    fixed.reporter.answers.set()  # type: ignore[attr-defined]
    await until(lambda: not old.reporter.registered, 2)
    await asyncio.wait_for(handing, 1.0)
    assert fixed.reporter.registered and fixed.predecessor is None
    retiring.cancel()
    await asyncio.gather(retiring, return_exceptions=True)
    await stop(fixed, typo)


async def test_a_withdrawal_that_never_answers_holds_back_its_replacement_so_long() -> None:
    old = await registered_old()
    old.reporter.answers.clear()  # type: ignore[attr-defined]  # (its credentials dead)
    task = asyncio.create_task(old.reporter.retire())
    new = waiting_new()
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.wait_for(after_retirement(Retirement(old.reporter, task), new), TIMEOUT + 1)
    assert TIMEOUT - 0.05 <= loop.time() - started < TIMEOUT + 0.5  # (was: until it ends)
    assert not task.done()  # the withdrawal goes on ...
    assert old.reporter.successor is new.reporter  # ... deleting only what is its own
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await old.reporter.cancel()
