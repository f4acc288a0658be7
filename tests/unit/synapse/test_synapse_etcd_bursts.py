"""The etcd watcher under a burst of events (no etcd: a fake connection hands out a watch
the test feeds): one report per burst, and a burst beyond the watch's bound lists anew."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aetcd.exceptions
import aetcd.rpc
import aetcd.rtypes
from synapse_testlib import Collector, eventually, metrics, sample, service_config

from smartstack.etcd_batch import Listing
from smartstack.etcd_wake import RecoveryWake
from smartstack.etcd_watch import PrefixWatch
from synapse.watchers.base import Entry, WatcherContext
from synapse.watchers.etcd import EtcdWatcher

PUT = aetcd.rpc.Event.EventType.PUT


def kv(i: int, revision: int) -> aetcd.rpc.KeyValue:
    value = json.dumps({"host": "127.0.0.1", "port": 9000 + i, "name": f"i{i}"}).encode()
    return aetcd.rpc.KeyValue(key=b"/svc/web/i%d" % i, value=value, mod_revision=revision,
                              create_revision=revision)  # fmt: skip


class FakeStream:
    client = object()

    def __init__(self) -> None:
        self.forgotten: list[PrefixWatch] = []

    def forget(self, watch: PrefixWatch) -> None:
        self.forgotten.append(watch)


class FakeConnection:
    """What the watcher asks of an ``EtcdConnection``: listings from ``keys``, watches the
    test feeds through ``watches[-1]``."""

    connection_errors = (ConnectionError,)
    compacted_errors = (aetcd.exceptions.RevisionCompactedError,)
    failovers = 0
    current_endpoint = "127.0.0.1:1"
    endpoints = ["127.0.0.1:1"]

    def __init__(self, max_pending: int) -> None:
        self.keys: dict[int, aetcd.rpc.KeyValue] = {}
        self.revision = 5
        self.listings = 0
        self.watches: list[PrefixWatch] = []
        self.max_pending = max_pending
        self.wake = RecoveryWake(self.wake_probe)  # never failed: a test calls recovered()

    async def wake_probe(self) -> object:
        raise AssertionError("not failing: never probed")

    async def list_prefix(self, prefix: bytes, timeout: float) -> Listing:
        self.listings += 1
        return Listing(list(self.keys.values()), self.revision)

    async def watch_prefix(self, prefix: bytes, start_revision: int) -> PrefixWatch:
        watch = PrefixWatch(FakeStream(), max_pending=self.max_pending)  # type: ignore[arg-type]
        watch.created.set_result(None)
        self.watches.append(watch)
        return watch

    def after_next_check(self, interval: float, callback: Any) -> None:
        pass  # no consistency check in these tests

    async def rotate(self, reason: str, failed: Any = None) -> None:
        raise AssertionError("no connection error here")

    def burst(self, count: int) -> None:
        for i in range(count):
            self.revision += 1
            self.keys[i] = kv(i, self.revision)
            self.watches[-1].deliver(aetcd.rtypes.Event(PUT, self.keys[i]))


async def start(conn: FakeConnection) -> tuple[EtcdWatcher, Collector]:
    sink = Collector()
    cfg = service_config({"method": "etcd", "endpoints": ["127.0.0.1:1"], "path": "/svc/web"})
    ctx = WatcherContext(loop=asyncio.get_running_loop(), metrics=metrics(),
                         etcd_connection=lambda discovery: conn)  # type: ignore[arg-type,return-value]  # fmt: skip
    watcher = EtcdWatcher("web", cfg, sink, ctx)
    await watcher.start()
    await eventually(lambda: watcher.connected and conn.watches, what="a watch")
    return watcher, sink


async def test_a_burst_of_events_is_one_report() -> None:
    conn = FakeConnection(max_pending=1000)
    watcher, sink = await start(conn)
    try:
        conn.burst(300)  # all delivered before the watcher looks
        await sink.wait(lambda r: len(r.found) == 300)
        assert len(sink.reports) == 2  # the empty listing, then the whole burst at once
    finally:
        await watcher.stop()


async def test_a_burst_beyond_the_bound_lists_again() -> None:
    conn = FakeConnection(max_pending=50)
    watcher, sink = await start(conn)
    try:
        conn.burst(120)
        await sink.wait(lambda r: len(r.found) == 120)  # from the listing, not the events
        assert conn.listings == 2 and watcher.overflows == 1 and len(conn.watches) == 2
        assert watcher.revision == conn.revision  # watching on from the listing
    finally:
        await watcher.stop()


async def test_records_share_their_origin_key_revision_and_port_objects() -> None:
    # Memory per record (issue 15): the known key is the report's origin string, a key
    # never modified is kept as the Found the reports carry (its create revision is its
    # version), a modified one as an Entry with both revisions.
    conn = FakeConnection(max_pending=1000)
    conn.keys = {0: kv(0, 70007), 1: kv(1, 70008)}  # (above the cached small ints)
    conn.keys[1].create_revision = 70006  # modified since created: two ints
    watcher, sink = await start(conn)
    try:
        found = {f.origin: f for f in (await sink.wait(lambda r: len(r.found) == 2)).found}
        assert set(found) == {"etcd:/svc/web/i0", "etcd:/svc/web/i1"}
        for origin in watcher._keys:
            assert next(k for k in found if k == origin) is origin
        first, second = watcher._keys["etcd:/svc/web/i0"], watcher._keys["etcd:/svc/web/i1"]
        assert first is found["etcd:/svc/web/i0"] and first.sequence == 70007
        assert isinstance(second, Entry) and (second.sequence, second.version) == (70006, 70008)
        assert found["etcd:/svc/web/i1"].sequence == 70006
    finally:
        await watcher.stop()


async def test_a_record_rewritten_unchanged_is_not_reported_again() -> None:
    # A never-modified record is stored as its Found; the same value put again (a new mod
    # revision) makes it an Entry, and its report equals the last one: none is sent.
    conn = FakeConnection(max_pending=1000)
    conn.keys = {0: kv(0, 7)}
    watcher, sink = await start(conn)
    try:
        await sink.wait(lambda r: len(r.found) == 1)
        reports = len(sink.reports)
        again = kv(0, 9)
        again.create_revision = 7
        watcher._apply([aetcd.rtypes.Event(PUT, again)])
        stored = watcher._keys["etcd:/svc/web/i0"]
        assert isinstance(stored, Entry) and (stored.sequence, stored.version) == (7, 9)
        assert len(sink.reports) == reports and watcher.reports == reports
        watcher._apply([aetcd.rtypes.Event(PUT, again)])  # same version: the same entry
        assert watcher._keys["etcd:/svc/web/i0"] is stored
    finally:
        await watcher.stop()


class CheckedConnection(FakeConnection):
    """Ticks when the test says, and answers the consistency check with ``answer``."""

    def __init__(self) -> None:
        super().__init__(max_pending=1000)
        self.callbacks: list[Any] = []
        self.answer = (0, 0)

    def after_next_check(self, interval: float, callback: Any) -> None:
        self.callbacks.append(callback)

    async def fingerprint(self, prefix: bytes) -> tuple[int, int]:
        if isinstance(self.answer, BaseException):
            raise self.answer
        return self.answer

    def tick(self) -> None:
        callbacks, self.callbacks = self.callbacks, []
        for callback in callbacks:
            callback(None)


async def test_the_consistency_check_waits_as_a_callback_and_a_silent_watch_lists_anew() -> None:
    conn = CheckedConnection()
    conn.keys, conn.revision = {0: kv(0, 70007)}, 70007
    watcher, _ = await start(conn)
    try:
        await eventually(lambda: len(conn.callbacks) == 1, what="the check armed")
        assert watcher._checking is None  # between checks: no task, a callback
        conn.answer = (1, 70007)  # what the watch delivered: armed again
        conn.tick()
        await eventually(lambda: len(conn.callbacks) == 1, what="armed again")
        assert conn.listings == 1 and watcher.stale_watches == 0
        conn.answer = (2, 70009)  # a key the watch never delivered
        conn.keys[1] = kv(1, 70009)
        conn.tick()
        await eventually(lambda: conn.listings == 2 and len(conn.watches) == 2, what="relist")
        assert watcher.stale_watches == 1 and len(watcher._keys) == 2
    finally:
        await watcher.stop()


async def test_a_check_after_the_connection_left_the_watchs_endpoint_lists_anew() -> None:
    # A JSON-gateway watch stays on its endpoint when the connection fails over (a check
    # timed out on a stopped or cut-off member): silent there, it is replaced at once.
    conn = CheckedConnection()
    conn.keys, conn.revision = {0: kv(0, 70007)}, 70007
    watcher, _ = await start(conn)
    try:
        await eventually(lambda: len(conn.callbacks) == 1, what="the check armed")
        conn.answer = TimeoutError("the check's endpoint does not answer")
        conn.failovers += 1  # with_endpoint moved on before the check gave up
        conn.tick()
        await eventually(lambda: conn.listings == 2 and len(conn.watches) == 2, what="relist")
        assert watcher.stale_watches == 1
        conn.answer = (1, 70007)
        await eventually(lambda: len(conn.callbacks) == 1, what="the new watch's check")
        conn.tick()  # no failover since the new watch was made: kept
        await eventually(lambda: len(conn.callbacks) == 1, what="armed again")
        assert conn.listings == 2 and watcher.stale_watches == 1
    finally:
        await watcher.stop()


async def test_a_bad_record_rewritten_with_the_same_refusal_is_logged_and_counted_once() -> None:
    # A writer that refreshes its key puts the same invalid value again and again (new mod
    # revisions): one bad_record, as ZooKeeper's watcher; a new refusal is a new record.
    conn = FakeConnection(max_pending=1000)
    watcher, _ = await start(conn)

    def put(port: int, revision: int) -> aetcd.rtypes.Event:
        value = json.dumps({"host": "127.0.0.1", "port": port, "name": "bad"}).encode()
        record = aetcd.rpc.KeyValue(key=b"/svc/web/bad", value=value, mod_revision=revision,
                                    create_revision=6)  # fmt: skip
        return aetcd.rtypes.Event(PUT, record)

    def bad() -> float:
        return sample(watcher.metrics.registry, "synapse_bad_records_total", service="web",
                      method="etcd")  # fmt: skip

    try:
        for revision in range(6, 56):
            watcher._apply([put(70000, revision)])
        assert bad() == 1 and watcher._keys["etcd:/svc/web/bad"].version == 55
        watcher._apply([put(-1, 56)])  # another reason: another record
        assert bad() == 2
        watcher._apply([put(9000, 57), put(70000, 58)])  # valid between: bad again
        assert bad() == 3
    finally:
        await watcher.stop()
