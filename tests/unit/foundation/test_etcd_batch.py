"""Batched etcd prefix listings (smartstack.etcd_batch) against an in-memory key space."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import aetcd.exceptions
import aetcd.rpc
import grpc
import pytest
from stall_witness import held_for, witnessing

from smartstack import etcd_batch
from smartstack.etcd import EtcdConnection
from smartstack.etcd_batch import BatchLister


class FakeKV:
    """The two KV calls the lister makes, answered from a dict at a fixed revision."""

    def __init__(self, keys: dict[bytes, bytes], revision: int, max_ops: int = 128) -> None:
        self.keys, self.revision, self.max_ops = keys, revision, max_ops
        self.mods: dict[bytes, int] = {}  # a key's mod revision, when not `revision`
        self.txns: list[int] = []  # ranges per transaction
        self.ranges = 0
        self.slow_above = 10**6  # transactions of more ranges take `slow` seconds
        self.slow = 0.0
        self.huge: set[bytes] = set()  # prefixes whose reply is above gRPC's receive limit

    def _range(self, request: aetcd.rpc.RangeRequest) -> aetcd.rpc.RangeResponse:
        kvs = [
            aetcd.rpc.KeyValue(
                key=k, value=v, mod_revision=self.mods.get(k, self.revision), create_revision=1
            )
            for k, v in sorted(self.keys.items())
            if request.key <= k < request.range_end
        ]
        count = len(kvs)
        if request.limit:  # the fingerprint's form: newest first, keys only
            kvs = sorted(kvs, key=lambda kv: -kv.mod_revision)[: request.limit]
            for kv in kvs:
                kv.value = b""
        return aetcd.rpc.RangeResponse(kvs=kvs, count=count)

    def _refuse(self, requests: list[aetcd.rpc.RangeRequest]) -> None:
        if any(r.key in self.huge for r in requests):
            raise grpc.aio.AioRpcError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                grpc.aio.Metadata(),
                grpc.aio.Metadata(),
                details="grpc: received message larger than max",
            )

    async def Range(self, request, timeout=None, metadata=None):
        self._refuse([request])
        self.ranges += 1
        reply = self._range(request)
        reply.header.revision = self.revision
        return reply

    async def Txn(self, request, timeout=None, metadata=None):
        if len(request.success) > self.max_ops:
            raise grpc.aio.AioRpcError(
                grpc.StatusCode.INVALID_ARGUMENT,
                grpc.aio.Metadata(),
                grpc.aio.Metadata(),
                details="etcdserver: too many operations in txn request",
            )
        self._refuse([op.request_range for op in request.success])
        if len(request.success) > self.slow_above:
            await asyncio.sleep(self.slow)
        self.txns.append(len(request.success))
        reply = aetcd.rpc.TxnResponse(succeeded=True)
        reply.header.revision = self.revision
        for op in request.success:
            reply.responses.add(response_range=self._range(op.request_range))
        return reply


class FakeClient:
    def __init__(self, kv: FakeKV) -> None:
        self.kvstub, self._timeout, self.metadata = kv, 1.0, None

    async def connect(self) -> None:
        return None


def keyspace(services: int, servers: int) -> dict[bytes, bytes]:
    return {f"/s/svc{i}/k{j}".encode(): b"{}" for i in range(services) for j in range(servers)}


def caller(client: FakeClient) -> Callable[..., Awaitable[Any]]:
    async def call(fn, timeout=None):  # EtcdConnection.with_client bounds each call so
        return await asyncio.wait_for(fn(client), timeout or 3.0)

    return call


async def test_listings_asked_together_are_read_in_few_transactions() -> None:
    kv = FakeKV(keyspace(300, 3), revision=42)
    lister = BatchLister(caller(FakeClient(kv)))
    listings = await asyncio.gather(*(lister.list(f"/s/svc{i}/".encode(), 1.0) for i in range(300)))
    for i, listing in enumerate(listings):
        assert [kv.key for kv in listing.kvs] == [f"/s/svc{i}/k{j}".encode() for j in range(3)]
        assert listing.revision == 42
    assert max(kv.txns) <= 128
    assert lister.calls == len(kv.txns) + kv.ranges <= 4
    assert sum(kv.txns) + kv.ranges == 300


async def test_a_prefix_does_not_get_its_neighbours_keys() -> None:
    kv = FakeKV({b"/s/web/a": b"1", b"/s/webx/b": b"2", b"/s/we": b"3"}, revision=7)
    lister = BatchLister(caller(FakeClient(kv)))
    web, webx = await asyncio.gather(lister.list(b"/s/web/", 1.0), lister.list(b"/s/webx/", 1.0))
    assert [k.key for k in web.kvs] == [b"/s/web/a"]
    assert [k.key for k in webx.kvs] == [b"/s/webx/b"]
    single = await lister.list(b"/s/web/", 1.0)  # alone: one plain range call
    assert [k.key for k in single.kvs] == [b"/s/web/a"] and kv.ranges == 1


async def test_a_batch_refused_as_too_large_is_split_and_stays_smaller() -> None:
    kv = FakeKV(keyspace(40, 1), revision=3, max_ops=10)
    lister = BatchLister(caller(FakeClient(kv)), max_ops=32)
    listings = await asyncio.gather(*(lister.list(f"/s/svc{i}/".encode(), 1.0) for i in range(40)))
    assert all(len(listing.kvs) == 1 for listing in listings)
    assert lister.max_ops <= 10
    assert max(kv.txns) <= 10


async def test_one_prefix_too_large_for_a_reply_does_not_pin_batches_at_one() -> None:
    kv = FakeKV(keyspace(40, 1), revision=3)
    kv.huge.add(b"/s/svc7/")
    lister = BatchLister(caller(FakeClient(kv)))
    results = await asyncio.gather(
        *(lister.list(f"/s/svc{i}/".encode(), 1.0) for i in range(40)), return_exceptions=True
    )
    failed = [i for i, r in enumerate(results) if isinstance(r, BaseException)]
    assert failed == [7]  # it alone fails
    assert isinstance(results[7], aetcd.exceptions.ClientError)
    assert lister.max_ops == 20  # the largest part etcd accepted, not 1


async def test_a_lowered_batch_size_grows_back_after_batches_read_in_a_row(monkeypatch) -> None:
    monkeypatch.setattr(etcd_batch, "GROW_AFTER", 4)  # fewer rounds, same rule
    kv = FakeKV(keyspace(200, 1), revision=3, max_ops=10)
    lister = BatchLister(caller(FakeClient(kv)))
    prefixes = [f"/s/svc{i}/".encode() for i in range(200)]
    await asyncio.gather(*(lister.list(p, 1.0) for p in prefixes[:40]))
    assert lister.max_ops == 10
    kv.max_ops = 128  # etcd's --max-txn-ops raised (or the refusal was a passing one)
    for _ in range(4):
        await asyncio.gather(*(lister.list(p, 1.0) for p in prefixes[:10]))
    assert lister.max_ops == 20
    for _ in range(4 * 4):
        await asyncio.gather(*(lister.list(p, 1.0) for p in prefixes[: lister.max_ops]))
    assert lister.max_ops == 128  # and no further
    await asyncio.gather(*(lister.list(p, 1.0) for p in prefixes))
    assert kv.txns[-2:] == [128, 72]


async def test_each_ask_keeps_its_own_timeout() -> None:
    kv = FakeKV(keyspace(3, 1), revision=3)
    kv.slow_above, kv.slow = 0, 0.3  # every transaction takes 0.3 s; a single range does not
    lister = BatchLister(caller(FakeClient(kv)))
    loop = asyncio.get_running_loop()
    # A long listing first: the lister used to keep its first caller's timeout for all.
    await asyncio.gather(lister.list(b"/s/svc0/", 5.0), lister.list(b"/s/svc1/", 5.0))
    async with witnessing() as held:
        started = loop.time()
        quick, patient = await asyncio.gather(
            lister.fingerprint(b"/s/svc1/", 0.1),
            lister.list(b"/s/svc2/", 5.0),
            return_exceptions=True,
        )
        took = loop.time() - started
    # Its 0.1 s, not the 0.3 s transaction's: 0.25, less what a stall of this loaded process
    # held the timers (it held the earlier one, the timeout, as long: it still comes first)
    assert isinstance(quick, TimeoutError) and took - held_for(held, started, started + took) < 0.25
    # The batch timed out with the fingerprint's time: the listing is read again on its own.
    assert [k.key for k in patient.kvs] == [b"/s/svc2/k0"] and kv.ranges == 1


async def test_a_batch_that_times_out_is_split_and_only_the_late_fail() -> None:
    kv = FakeKV(keyspace(8, 1), revision=3)
    kv.slow_above, kv.slow = 4, 5.0  # a large transaction hangs, small ones are quick
    lister = BatchLister(caller(FakeClient(kv)))
    timeouts = [0.2, 0.2] + [3.0] * 6
    results = await asyncio.wait_for(
        asyncio.gather(
            *(lister.list(f"/s/svc{i}/".encode(), t) for i, t in enumerate(timeouts)),
            return_exceptions=True,
        ),
        2,
    )
    assert all(isinstance(r, TimeoutError) for r in results[:2])
    assert [len(r.kvs) for r in results[2:]] == [1] * 6
    assert kv.txns == [3, 3]  # the six in time, in two halves


async def test_a_failed_call_fails_every_listing_of_its_batch() -> None:
    async def down(fn, timeout=None):
        raise aetcd.exceptions.ConnectionFailedError("etcd is down")

    lister = BatchLister(down)
    results = await asyncio.gather(
        *(lister.list(f"/s/svc{i}/".encode(), 1.0) for i in range(5)), return_exceptions=True
    )
    assert all(isinstance(r, aetcd.exceptions.ConnectionFailedError) for r in results)
    assert lister.max_ops == 128  # not a size problem: batches stay as large


async def test_an_asker_that_gave_up_is_not_read_for() -> None:
    kv = FakeKV(keyspace(3, 1), revision=5)
    lister = BatchLister(caller(FakeClient(kv)))
    gone = asyncio.ensure_future(lister.list(b"/s/svc0/", 1.0))
    await asyncio.sleep(0)
    gone.cancel()
    kept = await lister.list(b"/s/svc1/", 1.0)
    assert [k.key for k in kept.kvs] == [b"/s/svc1/k0"]
    assert kv.ranges == 1 and not kv.txns  # svc0 was not read
    with pytest.raises(asyncio.CancelledError):
        await gone


async def test_fingerprints_and_listings_share_transactions() -> None:
    kv = FakeKV(keyspace(3, 4), revision=50)
    kv.mods = {b"/s/svc1/k2": 61, b"/s/svc1/k0": 55}
    lister = BatchLister(caller(FakeClient(kv)))
    one, listing, empty = await asyncio.gather(
        lister.fingerprint(b"/s/svc1/", 1.0),
        lister.list(b"/s/svc2/", 1.0),
        lister.fingerprint(b"/x/", 1.0),
    )
    assert one == (4, 61) and empty == (0, 0)
    assert len(listing.kvs) == 4 and listing.revision == 50
    assert kv.txns == [3] and kv.ranges == 0


async def test_the_watchers_of_a_connection_check_on_one_shared_tick() -> None:
    conn = EtcdConnection(["127.0.0.1:1"])  # no call is made: only the tick is used
    loop = asyncio.get_running_loop()
    async with witnessing() as held:
        started = loop.time()
        first = asyncio.ensure_future(conn.next_check(0.2))
        await asyncio.sleep(0.05)
        tick = conn._tick
        later = [asyncio.ensure_future(conn.next_check(0.2)) for _ in range(20)]
        await asyncio.gather(first, *later)
        took = loop.time() - started
    assert conn._tick is tick and tick is not None and tick.done()
    # The latecomers did not start their own: 0.35, less what a stall of this process held
    assert took - held_for(held, started, started + took) < 0.25 + 0.1
    after = asyncio.ensure_future(conn.next_check(0.2))
    await asyncio.sleep(0)
    assert conn._tick is not tick and not after.done()  # the next round has a new tick
    after.cancel()
