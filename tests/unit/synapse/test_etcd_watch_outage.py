"""Lost etcd watches are logged per connection, not per service: the services of one etcd
connection lose their watches together (200 services: 200 lines at the start of an outage,
a reminder each, 200 on its return)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from synapse_testlib import Collector, eventually, metrics, service_config
from test_synapse_etcd_bursts import FakeConnection

from smartstack.etcd_batch import Listing
from smartstack.logs import _FIELDS as FIELDS
from synapse.watchers import etcd_outage
from synapse.watchers.base import WatcherContext
from synapse.watchers.etcd import EtcdWatcher
from synapse.watchers.etcd_outage import REMIND_EVERY, WatchOutage


def events(caplog: pytest.LogCaptureFixture, name: str) -> list[dict[str, Any]]:
    return [vars(r)[FIELDS] for r in caplog.records if r.getMessage() == name]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.due: list[Callable[[], None]] = []

    def later(self, delay: float, callback: Callable[[], None]) -> None:
        self.due.append(callback)

    def run_due(self) -> None:
        due, self.due = self.due, []
        for callback in due:
            callback()


def test_one_line_per_connection_with_the_count_reminders_and_return(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO", "synapse.watchers.etcd")
    clock = Clock()
    outage = WatchOutage(["127.0.0.1:1", "127.0.0.1:2"], clock=lambda: clock.now,
                         later=clock.later)  # fmt: skip
    owners = [object() for _ in range(200)]
    for i, owner in enumerate(owners):
        outage.failure(owner, f"s{i}", "ConnectionFailedError: Stream removed")
    assert len(clock.due) == 1  # one line gathered for them all
    clock.run_due()
    [lost] = events(caplog, "etcd_watch_lost")
    assert lost["new"] == lost["lost"] == 200 and lost["failures"] == 200
    assert lost["endpoints"] == "127.0.0.1:1,127.0.0.1:2"
    assert lost["services"] == "s0,s1,s10,s100,s101,..."

    for _ in range(10):  # retries with backoff: one reminder per 5 minutes
        clock.now += 60
        for i, owner in enumerate(owners):
            outage.failure(owner, f"s{i}", "ConnectionFailedError: Stream removed")
        clock.run_due()
    reminders = events(caplog, "etcd_watch_lost")[1:]
    assert [(r["new"], r["lost"]) for r in reminders] == [(0, 200), (0, 200)]

    outage.failure(owners[0], "s0", "TimeoutError: ")  # a new kind of error: said once
    outage.failure(owners[1], "s1", "TimeoutError: ")
    clock.run_due()
    assert events(caplog, "etcd_watch_lost")[-1]["error"] == "TimeoutError: "
    assert len(events(caplog, "etcd_watch_lost")) == 4

    clock.now += 30  # they come back over their backoff: the first, then all
    for owner in owners[:150]:
        outage.success(owner)
        clock.run_due()
    for owner in owners[150:]:
        outage.success(owner)
        clock.run_due()
    outage.success(owners[0])  # (not lost: nothing)
    clock.run_due()
    restored = events(caplog, "etcd_watch_restored")
    assert [(r["watchers"], r["lost"]) for r in restored] == [(1, 199), (199, 0)]
    assert restored[0]["seconds"] == 630.0 and restored[0]["failures"] == 2202
    assert clock.due == [] and outage.failures == 0  # over: the next failure is a new outage
    outage.failure(owners[0], "s0", "ConnectionFailedError: Stream removed")
    clock.run_due()
    assert events(caplog, "etcd_watch_lost")[-1]["failures"] == 1
    assert REMIND_EVERY == 300.0


def test_a_stopped_watcher_is_forgotten() -> None:
    clock = Clock()
    outage = WatchOutage(["e:1"], clock=lambda: clock.now, later=clock.later)
    old, new = object(), object()
    outage.failure(old, "web", "ConnectionFailedError: x")
    clock.run_due()
    outage.failure(new, "web", "ConnectionFailedError: x")  # its successor (a reload)
    outage.forget(old)
    assert [service for service, _ in outage.lost.values()] == ["web"]
    outage.forget(new)
    clock.run_due()
    assert outage.lost == {} and outage.failures == 0


def test_returns_held_back_are_said_when_the_last_lost_watcher_stops(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO", "synapse.watchers.etcd")
    clock = Clock()
    outage = WatchOutage(["e:1"], clock=lambda: clock.now, later=clock.later)
    owners = [object() for _ in range(3)]
    for i, owner in enumerate(owners):
        outage.failure(owner, f"s{i}", "ConnectionFailedError: x")
    clock.run_due()
    for owner in owners[:2]:
        outage.success(owner)
        clock.run_due()
    assert [r["watchers"] for r in events(caplog, "etcd_watch_restored")] == [1]  # s1 held
    outage.forget(owners[2])  # s2's service removed by a reload while lost
    clock.run_due()
    assert [(r["watchers"], r["lost"]) for r in events(caplog, "etcd_watch_restored")] == [
        (1, 2), (1, 0)]  # fmt: skip
    assert outage.failures == 0 and outage._back == []


class DownConnection(FakeConnection):
    """etcd away until ``down`` is cleared."""

    transport = "grpc"

    def __init__(self) -> None:
        super().__init__(max_pending=1000)
        self.down = True

    async def list_prefix(self, prefix: bytes, timeout: float) -> Listing:
        if self.down:
            raise ConnectionError("etcd is away")
        return await super().list_prefix(prefix, timeout)


async def test_the_services_of_one_connection_log_one_outage(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level("INFO", "synapse.watchers.etcd")
    monkeypatch.setattr(etcd_outage, "GATHER", 0.1)
    conn = DownConnection()
    ctx = WatcherContext(loop=asyncio.get_running_loop(), metrics=metrics(),
                         etcd_connection=lambda discovery: conn)  # type: ignore[arg-type,return-value]  # fmt: skip
    discovery = {"method": "etcd", "endpoints": ["127.0.0.1:1"], "path": "/svc/web"}
    watchers = [EtcdWatcher(f"s{i}", service_config(discovery), Collector(), ctx)
                for i in range(20)]  # fmt: skip
    for watcher in watchers:
        await watcher.start()
    try:
        await eventually(lambda: events(caplog, "etcd_watch_lost"), what="the outage logged")
        await asyncio.sleep(0.3)
        [lost] = events(caplog, "etcd_watch_lost")
        assert lost["lost"] == 20 and lost["error"] == "ConnectionError: etcd is away"
        assert all(w.status()["error"] == "ConnectionError: etcd is away" for w in watchers)
        conn.down = False
        await eventually(lambda: all(w.connected for w in watchers), what="watching again")
        await eventually(lambda: events(caplog, "etcd_watch_restored"), what="the return")
        await asyncio.sleep(0.3)
        restored = events(caplog, "etcd_watch_restored")
        assert sum(r["watchers"] for r in restored) == 20 and len(restored) <= 2
        assert restored[-1]["lost"] == 0
    finally:
        for watcher in watchers:
            await watcher.stop()


def _outage(clock: Clock) -> WatchOutage:
    return WatchOutage(["127.0.0.1:1"], clock=lambda: clock.now, later=clock.later)


def _lose(outage: WatchOutage, owners: dict[str, object], error: str) -> None:
    for service, owner in owners.items():
        outage.failure(owner, service, error)


def _two_lost(caplog: pytest.LogCaptureFixture) -> tuple[Clock, WatchOutage, object, object]:
    """An outage of two watchers ("a", "b"), its lost line said."""
    caplog.set_level("INFO", "synapse.watchers.etcd")
    clock = Clock()
    outage = _outage(clock)
    a, b = object(), object()
    _lose(outage, {"a": a, "b": b}, "ConnectionFailedError: down")
    clock.run_due()
    return clock, outage, a, b


def test_a_service_removed_while_lost_still_ends_the_outage(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """(a) two lost, one back, the other removed by a SIGHUP: the last line said lost=1."""
    clock, outage, a, b = _two_lost(caplog)
    clock.now += 1
    outage.success(a)
    clock.run_due()
    outage.forget(b)
    clock.run_due()
    back, end = events(caplog, "etcd_watch_restored")
    assert (back["watchers"], back["lost"], back["removed"]) == (1, 1, 0)
    assert (end["watchers"], end["lost"], end["removed"]) == (0, 0, 1)
    assert outage.failures == 0  # over: the next failure starts a new outage


def test_the_only_lost_service_removed_ends_the_outage(caplog: pytest.LogCaptureFixture) -> None:
    """(c) the last line was the lost one."""
    caplog.set_level("INFO", "synapse.watchers.etcd")
    clock = Clock()
    outage = _outage(clock)
    a = object()
    outage.failure(a, "a", "ConnectionFailedError: down")
    clock.run_due()
    outage.forget(a)
    clock.run_due()
    [end] = events(caplog, "etcd_watch_restored")
    assert (end["watchers"], end["lost"], end["removed"], end["failures"]) == (0, 0, 1, 1)


def test_an_outage_within_a_second_of_the_last_ones_end_is_a_new_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """(b) the end of the first outage was never said, the second's lost line came before
    ``restored lost=2`` and its failures counted the first's (2 -> 4)."""
    clock, outage, a, b = _two_lost(caplog)
    outage.success(a)
    clock.run_due()
    outage.success(b)  # all back: the end is gathered for a second
    clock.now += 0.5
    _lose(outage, {"a": a, "b": b}, "ConnectionFailedError: down again")
    clock.run_due()
    outage.success(a)
    outage.success(b)
    clock.run_due()
    said = [
        (r.getMessage(), vars(r)[FIELDS]["lost"], vars(r)[FIELDS]["failures"])
        for r in caplog.records
        if r.getMessage().startswith("etcd_watch_")
    ]
    assert said == [
        ("etcd_watch_lost", 2, 2),
        ("etcd_watch_restored", 1, 2),
        ("etcd_watch_restored", 0, 2),  # the first outage's end
        ("etcd_watch_lost", 2, 2),  # a new outage: its own count
        ("etcd_watch_restored", 0, 2),
    ]
