"""Many watches on one etcd Watch stream (smartstack.etcd_watch), against a fake stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aetcd.exceptions
import aetcd.rpc
import pytest

from smartstack import etcd_retire
from smartstack.etcd import CONNECTION_ERRORS, EtcdConnection
from smartstack.etcd_watch import (
    WatchCreateTimeout,
    WatchEvent,
    WatchOverflow,
    WatchStream,
    WatchStreamStalled,
)


class FakeWatchServer:
    """etcd's side of one Watch stream: answers creates in order (or holds them), and
    sends what a test puts in ``responses``."""

    def __init__(self, hold_creates: int = 0) -> None:
        self.requests: list[aetcd.rpc.WatchRequest] = []
        self.responses: asyncio.Queue[Any] = asyncio.Queue()
        self.hold_creates = hold_creates  # answer nothing until this many creates came
        self._held: list[aetcd.rpc.WatchResponse] = []
        self._next_id = 100
        self.compact_on_create: set[bytes] = set()

    def open(self, requests: AsyncIterator[aetcd.rpc.WatchRequest]) -> AsyncIterator[Any]:
        self._reader = asyncio.ensure_future(self._consume(requests))
        return self._responses()

    async def _consume(self, requests: AsyncIterator[aetcd.rpc.WatchRequest]) -> None:
        async for request in requests:
            self.requests.append(request)
            if not request.HasField("create_request"):
                continue
            self._next_id += 1
            compacted = request.create_request.key in self.compact_on_create
            reply = aetcd.rpc.WatchResponse(created=True, watch_id=self._next_id,
                                            canceled=compacted,
                                            compact_revision=5 if compacted else 0)  # fmt: skip
            self._held.append(reply)
            if len(self._held) >= self.hold_creates:
                for held in self._held:
                    self.responses.put_nowait(held)
                self._held = []

    async def _responses(self) -> AsyncIterator[Any]:
        while True:
            item = await self.responses.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def put(self, watch_id: int, key: bytes, delete: bool = False, revision: int = 7) -> None:
        kind = aetcd.rpc.Event.EventType.DELETE if delete else aetcd.rpc.Event.EventType.PUT
        kv = aetcd.rpc.KeyValue(key=key, value=b"{}", mod_revision=revision)
        event = aetcd.rpc.Event(type=kind, kv=kv)
        self.responses.put_nowait(aetcd.rpc.WatchResponse(watch_id=watch_id, events=[event]))

    def creates(self) -> list[bytes]:
        return [r.create_request.key for r in self.requests if r.HasField("create_request")]

    def cancels(self) -> list[int]:
        return [r.cancel_request.watch_id for r in self.requests if r.HasField("cancel_request")]


class FakeMaintenance:
    """The endpoint answers EtcdConnection's status probe, with ``leader`` (0: none)."""

    def __init__(self, leader: int = 1) -> None:
        self.leader = leader

    async def Status(self, request: Any, timeout: float, metadata: Any) -> Any:
        return aetcd.rpc.StatusResponse(leader=self.leader)


class FakeClient:
    _timeout = 1.0
    metadata = None

    def __init__(self, leader: int = 1) -> None:
        self.maintenancestub = FakeMaintenance(leader)

    async def connect(self) -> None:
        return None

    async def close(self) -> None:
        return None


async def next_event(watch) -> Any:
    return await asyncio.wait_for(watch.__aiter__().__anext__(), 2)


async def test_creations_are_all_sent_at_once_and_events_go_to_their_watch() -> None:
    # etcd answers only once all 50 creates arrived: one-at-a-time creation would hang.
    server = FakeWatchServer(hold_creates=50)
    stream = WatchStream(FakeClient(), server.open)  # type: ignore[arg-type]
    prefixes = [f"/s/svc{i}/".encode() for i in range(50)]
    watches = await asyncio.wait_for(
        asyncio.gather(*(stream.watch_prefix(p, 3) for p in prefixes)), 2
    )
    assert server.creates() == prefixes
    assert [w.watch_id for w in watches] == list(range(101, 151))
    assert all(w.client is stream.client for w in watches)
    server.put(watches[7].watch_id, b"/s/svc7/a")
    server.put(watches[3].watch_id, b"/s/svc3/b", delete=True)
    seven, three = await next_event(watches[7]), await next_event(watches[3])
    assert (seven.kind, seven.kv.key) == ("PUT", b"/s/svc7/a")
    assert (three.kind, three.kv.key, three.kv.mod_revision) == ("DELETE", b"/s/svc3/b", 7)
    # (etcd's KeyValue message as it came: no copy of its fields per event)
    assert type(seven) is WatchEvent and isinstance(seven.kv, aetcd.rpc.KeyValue)
    assert all(not w._pending for w in watches)  # nobody else was woken
    await stream.close()


async def test_a_stream_that_ends_fails_every_watch_and_is_not_reused() -> None:
    server = FakeWatchServer()
    stream = WatchStream(FakeClient(), server.open)  # type: ignore[arg-type]
    watches = [await stream.watch_prefix(f"/s/{i}/".encode(), 1) for i in range(3)]
    server.responses.put_nowait(None)  # etcd closes the stream cleanly
    for watch in watches:
        with pytest.raises(aetcd.exceptions.ConnectionFailedError):
            await next_event(watch)
    assert stream.broken
    with pytest.raises(aetcd.exceptions.ConnectionFailedError):
        await stream.watch_prefix(b"/s/late/", 1)


async def test_compaction_fails_only_the_watch_it_concerns() -> None:
    server = FakeWatchServer()
    server.compact_on_create.add(b"/s/old/")
    stream = WatchStream(FakeClient(), server.open)  # type: ignore[arg-type]
    with pytest.raises(aetcd.exceptions.RevisionCompactedError):
        await stream.watch_prefix(b"/s/old/", 1)
    a, b = await stream.watch_prefix(b"/s/a/", 9), await stream.watch_prefix(b"/s/b/", 9)
    server.responses.put_nowait(
        aetcd.rpc.WatchResponse(watch_id=a.watch_id, canceled=True, compact_revision=12)
    )
    with pytest.raises(aetcd.exceptions.RevisionCompactedError):
        await next_event(a)
    server.put(b.watch_id, b"/s/b/x")
    assert (await next_event(b)).kv.key == b"/s/b/x"
    await stream.close()


async def test_cancel_ends_the_iteration_and_tells_etcd() -> None:
    server = FakeWatchServer()
    stream = WatchStream(FakeClient(), server.open)  # type: ignore[arg-type]
    watch = await stream.watch_prefix(b"/s/a/", 1)
    await watch.cancel()
    events = [e async for e in watch]
    assert events == []
    await asyncio.sleep(0.01)
    assert server.cancels() == [watch.watch_id]
    server.put(watch.watch_id, b"/s/a/late")  # a leftover: dropped
    await stream.close()


async def test_a_creator_that_gave_up_gets_its_watch_cancelled_once_created() -> None:
    server = FakeWatchServer(hold_creates=2)
    stream = WatchStream(FakeClient(), server.open)  # type: ignore[arg-type]
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(stream.watch_prefix(b"/s/gone/", 1), 0.05)
    kept = await asyncio.wait_for(stream.watch_prefix(b"/s/kept/", 1), 2)
    await asyncio.sleep(0.01)
    assert server.cancels() == [kept.watch_id - 1]
    await stream.close()
    with pytest.raises(aetcd.exceptions.ConnectionFailedError):
        await next_event(kept)


async def test_a_stream_that_stops_answering_is_abandoned() -> None:
    server = FakeWatchServer()
    stream = WatchStream(FakeClient(), server.open)  # type: ignore[arg-type]
    live = await stream.watch_prefix(b"/s/live/", 1, timeout=0.1)
    server.hold_creates = 10**6  # from now on etcd answers nothing
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(WatchCreateTimeout):
        await asyncio.wait_for(stream.watch_prefix(b"/s/new/", 1, timeout=0.1), 2)
    assert loop.time() - started < 0.5 and stream.broken
    await asyncio.sleep(0.01)
    assert stream._task is not None and stream._task.done()  # its call is not left open
    with pytest.raises(WatchStreamStalled) as failed:
        await next_event(live)
    assert not isinstance(failed.value, CONNECTION_ERRORS)  # its watcher keeps the client
    with pytest.raises(WatchStreamStalled):
        await stream.watch_prefix(b"/s/late/", 1, timeout=0.1)  # not queued on it any more


class SlowWatchServer(FakeWatchServer):
    """Answers each create ``delay`` seconds after the previous answer (a busy etcd)."""

    def __init__(self, delay: float) -> None:
        super().__init__(hold_creates=10**6)
        self.delay = delay
        self._pace = asyncio.ensure_future(self._answer_slowly())

    async def _answer_slowly(self) -> None:
        while True:
            await asyncio.sleep(self.delay)
            if self._held:
                self.responses.put_nowait(self._held.pop(0))


async def test_creations_queued_behind_others_wait_while_the_stream_answers() -> None:
    server = SlowWatchServer(delay=0.04)
    stream = WatchStream(FakeClient(), server.open)  # type: ignore[arg-type]
    watches = await asyncio.wait_for(
        asyncio.gather(*(stream.watch_prefix(f"/s/{i}/".encode(), 1, 0.1) for i in range(8))), 3
    )
    assert len({w.watch_id for w in watches}) == 8 and not stream.broken  # ~0.32 s > 0.1 s
    server._pace.cancel()
    await stream.close()


async def test_the_connection_opens_a_new_stream_after_one_stops_answering(monkeypatch) -> None:
    servers = [FakeWatchServer(hold_creates=10**6), FakeWatchServer()]  # silent, then fine
    opened: list[FakeWatchServer] = []

    def call(self: WatchStream) -> Any:
        opened.append(servers[len(opened)])
        return opened[-1].open(self._request_stream())

    monkeypatch.setattr(WatchStream, "_call", call)
    conn = EtcdConnection(["127.0.0.1:1", "127.0.0.1:2"], timeout=0.1)
    client = FakeClient()
    conn._client = client  # type: ignore[assignment]  # connected: no socket in a unit test
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(conn.watch_prefix(b"/s/a/", 1), 3)
    assert conn._client is client and conn.failovers == 0  # the endpoint answers: kept
    watch = await asyncio.wait_for(conn.watch_prefix(b"/s/a/", 1), 3)
    assert len(opened) == 2 and watch.stream is conn._stream and watch.client is client
    opened[1].put(watch.watch_id, b"/s/a/x")
    assert (await next_event(watch)).kv.key == b"/s/a/x"
    await conn.close()


def burst(watch_id: int, count: int) -> aetcd.rpc.WatchResponse:
    put = aetcd.rpc.Event.EventType.PUT
    events = [
        aetcd.rpc.Event(type=put, kv=aetcd.rpc.KeyValue(key=b"/s/a/%d" % i, mod_revision=10 + i))
        for i in range(count)
    ]
    return aetcd.rpc.WatchResponse(watch_id=watch_id, events=events)


async def test_events_waiting_are_taken_as_one_batch() -> None:
    server = FakeWatchServer()
    stream = WatchStream(FakeClient(), server.open)  # type: ignore[arg-type]
    watch = await stream.watch_prefix(b"/s/a/", 1)
    server.responses.put_nowait(burst(watch.watch_id, 300))
    server.responses.put_nowait(burst(watch.watch_id, 200))
    await asyncio.sleep(0.05)  # both responses dispatched before the consumer looks
    batches = watch.batches()
    first = await asyncio.wait_for(batches.__anext__(), 2)
    assert len(first) == 500 and [e.kv.mod_revision for e in first[:2]] == [10, 11]
    await watch.cancel()
    assert [b async for b in batches] == []
    await stream.close()


async def test_a_burst_beyond_the_bound_is_dropped_and_fails_the_watch() -> None:
    server = FakeWatchServer()
    stream = WatchStream(FakeClient(), server.open)  # type: ignore[arg-type]
    watch = await stream.watch_prefix(b"/s/a/", 1)
    other = await stream.watch_prefix(b"/s/b/", 1)
    watch.max_pending = 100
    server.responses.put_nowait(burst(watch.watch_id, 150))
    with pytest.raises(WatchOverflow):
        await asyncio.wait_for(watch.batches().__anext__(), 2)
    assert not watch._pending  # dropped, not held
    await asyncio.sleep(0.01)
    assert server.cancels() == [watch.watch_id]  # etcd stops sending them
    server.put(other.watch_id, b"/s/b/x")  # the stream and its other watches go on
    assert (await next_event(other)).kv.key == b"/s/b/x"
    await stream.close()


class ClosingClient(FakeClient):
    """Closing it cancels its calls in flight, as gRPC does when a channel closes."""

    def __init__(self, name: str) -> None:
        self.name, self.calls, self.closed = name, [], False

    async def get(self) -> str:
        call = asyncio.get_running_loop().create_future()
        self.calls.append(call)
        await call
        return self.name

    async def close(self) -> None:
        self.closed = True
        for call in self.calls:
            call.cancel()


async def until(predicate, what: str) -> None:
    for _ in range(1000):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"never: {what}")


def connection_over(old: ClosingClient, new: ClosingClient, monkeypatch) -> EtcdConnection:
    conn = EtcdConnection(["127.0.0.1:1", "127.0.0.1:2"], timeout=5)
    conn._client = old  # type: ignore[assignment]  # connected: no socket in a unit test

    async def client() -> Any:
        if conn._client is None:
            conn._client = new  # type: ignore[assignment]
        return conn._client

    monkeypatch.setattr(conn, "client", client)
    return conn


async def test_a_call_in_flight_when_another_caller_fails_over_finishes_on_its_client(
    monkeypatch,
) -> None:
    """Many callers share one client: the first to fail rotates. The replaced client is not
    closed under the others' calls (gRPC would cancel them: a late keep-alive lost), only
    once the last of them has ended."""
    old, new = ClosingClient("old"), ClosingClient("new")
    conn = connection_over(old, new, monkeypatch)
    waiting = asyncio.ensure_future(conn.with_client(lambda c: c.get()))
    await until(lambda: old.calls, "the call on the old client")
    await conn.rotate("another caller failed", old)
    assert not old.calls[0].cancelled() and not old.closed
    assert await conn.client() is new  # new calls go to the new one
    old.calls[0].set_result(None)
    assert await asyncio.wait_for(waiting, 2) == "old"
    await until(lambda: old.closed, "the replaced client closed after its last call")
    assert conn.failovers == 1 and not new.closed


async def test_a_call_cancelled_by_closing_its_replaced_client_is_tried_on_the_next_one(
    monkeypatch,
) -> None:
    """A replaced client whose call outlives ``CLOSE_AT_THE_LATEST`` is closed anyway, and
    gRPC cancels that call: the CancelledError is not the caller's to die of."""
    monkeypatch.setattr(etcd_retire, "CLOSE_AT_THE_LATEST", 0.01)
    old, new = ClosingClient("old"), ClosingClient("new")
    conn = connection_over(old, new, monkeypatch)
    waiting = asyncio.ensure_future(conn.with_client(lambda c: c.get()))
    await until(lambda: old.calls, "the call on the old client")
    await conn.rotate("another caller failed", old)
    await asyncio.sleep(0.05)
    await until(lambda: new.calls or waiting.done(), "the call tried again, or an end")
    new.calls[0].set_result(None)
    assert await asyncio.wait_for(waiting, 2) == "new"
    assert conn.failovers == 1  # one failover, by the other caller


async def test_a_caller_cancelled_itself_is_still_cancelled(monkeypatch) -> None:
    old, new = ClosingClient("old"), ClosingClient("new")
    conn = connection_over(old, new, monkeypatch)
    waiting = asyncio.ensure_future(conn.with_client(lambda c: c.get()))
    await until(lambda: old.calls, "the call on the old client")
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert not new.calls
