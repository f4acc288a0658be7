"""A restarted nerve keeps a previous run's etcd lease alive while its reporters hold a key
on it, and not beyond (the last holder decided, or the holding bound). Fakes only: an etcd
that answers keep-alives with a scaled-down TTL, and a reporter's view of one key."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import pytest

from nerve.cadence import CHECK_STEP
from nerve.checks.base import LATE_GRACE
from nerve.config import ServiceConfig
from nerve.registries import HOLD_SLACK, hold_bound
from nerve.reporters.etcd import EtcdReporter
from nerve.reporters.etcd_lease import LeaseKeeper
from nerve.reporters.etcd_leftover import LeftoverLeases, granted_ttl
from smartstack.record import Registration, encode, etcd_key

OLD, OURS = 0x51, 0x77
TTL = 0.3  # seconds, scaled down (etcd's are whole seconds): renewals every 0.1 s


class FakeEtcd:
    """One member: keys with their lease, and keep-alives answered with ``ttl`` (0: the
    lease is unknown, as etcd answers an expired one)."""

    timeout = 0.5

    def __init__(self, ttl: float = TTL, failures: int = 0) -> None:
        self.ttl, self.failures = ttl, failures
        self.keys: dict[bytes, SimpleNamespace] = {}
        self.renewals: list[tuple[float, int]] = []
        self.revoked: list[int] = []
        self.listings = 0
        self.slow: dict[bytes, float] = {}  # key -> seconds a get of it takes
        self.revision = 1

    async def with_client(
        self, fn: Callable[[Any], Awaitable[Any]], timeout: float | None = None, probe: bool = True
    ) -> Any:
        return await fn(self)

    async def refresh(self, _client: Any, lease_id: int) -> Any:
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError("every member failed")
        self.renewals.append((time.monotonic(), lease_id))
        return SimpleNamespace(ID=lease_id, TTL=self.ttl)

    async def lease_keys(self, _client: Any, lease_id: int) -> tuple[float, list[bytes]]:
        """LeaseTimeToLive with keys: -1 for a lease etcd no longer knows."""
        self.listings += 1
        keys = [key for key, kv in self.keys.items() if kv.lease == lease_id]
        return (self.ttl if self.ttl > 0 else -1), keys

    async def get(self, key: bytes) -> Any:
        await asyncio.sleep(self.slow.get(key, 0.0))
        return self.keys.get(key)

    async def put(self, key: bytes, value: bytes, lease: int) -> Any:
        self.revision += 1
        self.keys[key] = SimpleNamespace(value=value, lease=lease)
        return SimpleNamespace(header=SimpleNamespace(revision=self.revision))

    async def delete(self, key: bytes) -> bool:
        return self.keys.pop(key, None) is not None

    async def lease(self, ttl: float) -> Any:
        return SimpleNamespace(id=OURS, ttl=ttl)

    async def revoke_lease(self, lease_id: int) -> None:
        self.revoked.append(lease_id)


async def until(condition: Callable[[], object], what: str, timeout: float = 2.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


def leftovers_on(etcd: FakeEtcd, own: int | None = None) -> LeftoverLeases:
    return LeftoverLeases(etcd, lambda: own, refresh=etcd.refresh, keys=etcd.lease_keys)  # type: ignore[arg-type]


def renewed(etcd: FakeEtcd, lease: int = OLD) -> int:
    return sum(1 for _, lease_id in etcd.renewals if lease_id == lease)


async def test_renewed_every_third_of_its_ttl_until_the_last_holder_decides() -> None:
    etcd = FakeEtcd()
    leftovers = leftovers_on(etcd)
    a, b = object(), object()
    assert leftovers.hold(OLD, a, 10.0, b"", service="a")
    assert leftovers.hold(OLD, b, 10.0, b"", service="b")
    try:
        await until(lambda: renewed(etcd) >= 4, "renewals")
        leftovers.release(a)
        assert leftovers.holders(OLD) == 1  # b still holds: still renewed
        count = renewed(etcd)
        await until(lambda: renewed(etcd) > count, "a renewal for b alone")
        leftovers.release(b)
        assert leftovers.holders(OLD) == 0
        gaps = [t2 - t1 for (t1, _), (t2, _) in itertools.pairwise(etcd.renewals)]
        assert etcd.renewals and max(gaps) < TTL, gaps  # renewed before it could expire
    finally:
        await leftovers.close()
    assert etcd.revoked == []  # left to expire: never revoked


async def test_never_renewed_beyond_the_holders_bound() -> None:
    etcd = FakeEtcd()
    leftovers = leftovers_on(etcd)
    bound = 0.35
    start = time.monotonic()
    assert leftovers.hold(OLD, object(), bound, b"", service="web")
    task = leftovers._leases[OLD].task
    assert task is not None
    await asyncio.wait_for(asyncio.shield(task), 2.0)  # it ends by itself, not released
    assert renewed(etcd) >= 2
    assert max(t for t, _ in etcd.renewals) < start + bound
    assert leftovers.holders(OLD) == 0


async def test_an_expired_lease_is_left_at_once() -> None:
    etcd = FakeEtcd(ttl=0)  # keep-alive says TTL 0: etcd no longer knows it
    leftovers = leftovers_on(etcd)
    assert leftovers.hold(OLD, object(), 10.0, b"", service="web")
    task = leftovers._leases[OLD].task
    assert task is not None
    await asyncio.wait_for(asyncio.shield(task), 2.0)
    assert renewed(etcd) == 0 and leftovers.holders(OLD) == 0  # LeaseTimeToLive said so


async def test_no_lease_or_our_own_lease_is_nothing_to_keep() -> None:
    etcd = FakeEtcd()
    leftovers = leftovers_on(etcd, own=OURS)
    assert not leftovers.hold(0, object(), 10.0, b"", service="web")  # a key without a lease
    assert not leftovers.hold(OURS, object(), 10.0, b"", service="web")  # ours: the keeper's
    assert leftovers._leases == {}


async def test_a_failed_keepalive_is_retried_well_within_the_lease() -> None:
    etcd = FakeEtcd(failures=2)
    leftovers = leftovers_on(etcd)
    start = time.monotonic()
    leftovers.hold(OLD, object(), 10.0, b"", service="web")
    try:
        await until(lambda: renewed(etcd) >= 1, "a renewal after the failures")
    finally:
        await leftovers.close()
    # Two retries after min(timeout/2, 1 s) each (the TTL not known yet).
    assert etcd.renewals[0][0] - start < 2 * FakeEtcd.timeout / 2 + 0.4


def test_a_keepalive_answer_s_ttl_from_grpc_or_json() -> None:
    assert granted_ttl(SimpleNamespace(TTL=5)) == 5
    assert granted_ttl(SimpleNamespace(TTL="5")) == 5  # the gateway's int64 as a string
    assert granted_ttl(None) == 0 and granted_ttl(SimpleNamespace(TTL=-1)) == -1


REGISTRATION = Registration("127.0.0.1", 3000, "i-test")
KEY = etcd_key("/nerve/web", REGISTRATION).encode()


def reporter_on(etcd: FakeEtcd, hold_for: float = 10.0) -> tuple[EtcdReporter, LeftoverLeases]:
    keeper = LeaseKeeper(etcd, 2)  # type: ignore[arg-type]
    keeper.leftovers = leftovers_on(etcd)
    return EtcdReporter("web", REGISTRATION, keeper, "/nerve/web", hold_for=hold_for), (
        keeper.leftovers
    )


@pytest.mark.parametrize("healthy", [True, False])
async def test_a_held_key_s_lease_is_kept_until_the_key_is_put_on_ours_or_deleted(
    healthy: bool,
) -> None:
    etcd = FakeEtcd()
    await etcd.put(KEY, encode(REGISTRATION), lease=OLD)
    reporter, leftovers = reporter_on(etcd)
    reporter.start()
    try:
        await until(lambda: leftovers.holders(OLD) == 1, "held")
        await until(lambda: renewed(etcd) >= 2, "the old lease renewed")
        reporter.set_registered(healthy)
        await asyncio.wait_for(reporter.wait_in_sync(), 2.0)
        assert leftovers.holders(OLD) == 0 and leftovers._leases == {}
        assert (etcd.keys[KEY].lease == OURS) if healthy else (KEY not in etcd.keys)
    finally:
        await reporter.stop(withdraw=False)
        await leftovers.close()


async def test_a_withdrawal_stops_renewing_the_old_lease_before_the_key_is_deleted() -> None:
    """Nothing vouches for the leftover once the checks withdraw it: its lease is not
    renewed while the delete waits for etcd (it expires with the key instead)."""
    etcd = FakeEtcd()
    await etcd.put(KEY, encode(REGISTRATION), lease=OLD)

    async def away(_key: bytes) -> bool:
        raise ConnectionError("etcd unreachable")

    etcd.delete = away  # type: ignore[method-assign]
    reporter, leftovers = reporter_on(etcd)
    reporter.start()
    try:
        await until(lambda: leftovers.holders(OLD) == 1, "held")
        reporter.set_registered(False)
        assert leftovers.holders(OLD) == 0 and leftovers._leases == {}
    finally:
        await reporter.stop(withdraw=False)
        await leftovers.close()


OTHER = Registration("127.0.0.1", 3001, "i-test")
OTHER_KEY = etcd_key("/nerve/web", OTHER).encode()


@pytest.mark.parametrize(
    "others_reporter, renewed_expected",
    [
        (False, False),  # a key nobody here holds (a moved or removed service): not renewed
        (True, True),  # held by a second reporter whose read answers later: renewed
    ],
)
async def test_a_lease_is_renewed_only_while_every_key_on_it_is_held(
    others_reporter: bool, renewed_expected: bool
) -> None:
    """Renewing a lease keeps every key on it: a key nobody vouches for (the old address
    of a moved service, a removed service) must expire with its lease, as without us."""
    etcd = FakeEtcd()
    await etcd.put(KEY, encode(REGISTRATION), lease=OLD)
    await etcd.put(OTHER_KEY, encode(OTHER), lease=OLD)
    etcd.slow[OTHER_KEY] = 0.2  # the second holder claims its key after the first one
    reporter, leftovers = reporter_on(etcd)
    keeper = reporter.keeper
    reporters = [reporter]
    if others_reporter:
        reporters.append(EtcdReporter("api", OTHER, keeper, "/nerve/web", hold_for=10.0))
    for each in reporters:
        each.start()
    try:
        await until(lambda: etcd.listings >= 1, "the lease's keys listed")
        await until(lambda: not leftovers._pending, "every reporter read its key", 1.0)
        if renewed_expected:
            await until(lambda: renewed(etcd) >= 2, "the old lease renewed")
            assert leftovers.holders(OLD) == 2
        else:  # looked at again and again (a holder's delete may land), never renewed
            listed = etcd.listings
            await until(lambda: etcd.listings >= listed + 3, "the lease's keys listed again")
            assert renewed(etcd) == 0
    finally:
        for each in reporters:
            await each.stop(withdraw=False)
        await leftovers.close()


@pytest.mark.parametrize("value", [encode(Registration("127.0.0.1", 3000, "i-test", weight=5))])
async def test_a_key_with_another_record_is_left_to_its_lease(value: bytes) -> None:
    etcd = FakeEtcd()
    await etcd.put(KEY, value, lease=OLD)
    reporter, leftovers = reporter_on(etcd)
    reporter.start()
    try:
        task = reporter._leftover
        assert task is not None
        await asyncio.wait_for(asyncio.shield(task), 2.0)  # read, and nothing to hold
        assert leftovers._leases == {} and etcd.renewals == []
    finally:
        await reporter.stop(withdraw=False)


def test_the_holding_bound_is_rise_rounds_of_the_interval_or_the_slowest_check() -> None:
    """... plus the spread of the first rounds (nerve/cadence.py): the first within the
    start window, the second up to one and a half intervals after it."""

    def service(**extra: Any) -> ServiceConfig:
        base = {"host": "127.0.0.1", "port": 3000, "reporter_type": "etcd",
                "etcd_endpoints": ["127.0.0.1:2379"], "etcd_path": "/nerve/web"}  # fmt: skip
        return ServiceConfig.model_validate({**base, **extra})

    check = {"type": "tcp", "rise": 3, "timeout": 0.2}
    spread = 0.2 + 0.05  # START_WINDOW + a tenth of the interval (nerve/cadence.py)
    assert hold_bound(service(check_interval=0.5, checks=[check])) == pytest.approx(
        3 * 0.5 + spread + HOLD_SLACK
    )
    slow = {**check, "timeout": 1.0}  # each round waits for its check's timeout
    assert hold_bound(service(check_interval=0.5, checks=[check, slow])) == pytest.approx(
        3 * (1.0 + LATE_GRACE + CHECK_STEP) + spread + HOLD_SLACK  # (started a step later)
    )
    assert hold_bound(service(check_interval=2.0, checks=[])) == pytest.approx(
        2.0 + 0.2 + 0.2 + HOLD_SLACK  # no checks
    )


async def test_a_withdrawing_holders_key_in_flight_does_not_stop_the_others_renewals() -> None:
    """A's check failed (its key's delete still on its way) while B holds on the same lease:
    A's key is not B's to vouch for, but it is going; once it went, B's key is renewed
    again (it was given up for good: B's key expired with the old lease)."""
    etcd = FakeEtcd()
    await etcd.put(KEY, encode(REGISTRATION), lease=OLD)
    await etcd.put(OTHER_KEY, encode(OTHER), lease=OLD)
    real_delete = etcd.delete

    async def slow_delete(key: bytes) -> bool:  # answered in 150 ms (> TTL/3 = 100 ms)
        await asyncio.sleep(0.15)
        return await real_delete(key)

    etcd.delete = slow_delete  # type: ignore[method-assign]
    a, leftovers = reporter_on(etcd)
    b = EtcdReporter("api", OTHER, a.keeper, "/nerve/web", hold_for=10.0)
    a.start()
    b.start()
    try:
        await until(lambda: leftovers.holders(OLD) == 2, "both held")
        await until(lambda: renewed(etcd) >= 2, "renewed")
        a.set_registered(False)  # A's check failed: withdrawn
        await asyncio.wait_for(a.wait_in_sync(), 2.0)
        assert KEY not in etcd.keys
        after = renewed(etcd)
        await until(lambda: renewed(etcd) > after, "B's key renewed again", 0.5)
    finally:
        await a.stop(withdraw=False)
        await b.stop(withdraw=False)
        await leftovers.close()
