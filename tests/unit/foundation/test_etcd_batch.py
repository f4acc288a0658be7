"""Batched etcd prefix listings (smartstack.etcd_batch) against an in-memory key space."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import aetcd.exceptions
import aetcd.rpc
import grpc
import pytest

from smartstack.etcd_batch import BatchLister


class FakeKV:
    """The two KV calls the lister makes, answered from a dict at a fixed revision."""

    def __init__(self, keys: dict[bytes, bytes], revision: int, max_ops: int = 128) -> None:
        self.keys, self.revision, self.max_ops = keys, revision, max_ops
        self.txns: list[int] = []  # ranges per transaction
        self.ranges = 0

    def _range(self, request: aetcd.rpc.RangeRequest) -> aetcd.rpc.RangeResponse:
        kvs = [
            aetcd.rpc.KeyValue(key=k, value=v, mod_revision=self.revision, create_revision=1)
            for k, v in sorted(self.keys.items())
            if request.key <= k < request.range_end
        ]
        return aetcd.rpc.RangeResponse(kvs=kvs, count=len(kvs))

    async def Range(self, request, timeout=None, metadata=None):
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
    async def call(fn, timeout=None):
        return await fn(client)

    return call


async def test_listings_asked_together_are_read_in_few_transactions() -> None:
    kv = FakeKV(keyspace(300, 3), revision=42)
    lister = BatchLister(caller(FakeClient(kv)), timeout=1.0)
    listings = await asyncio.gather(*(lister.list(f"/s/svc{i}/".encode()) for i in range(300)))
    for i, listing in enumerate(listings):
        assert [kv.key for kv in listing.kvs] == [f"/s/svc{i}/k{j}".encode() for j in range(3)]
        assert listing.revision == 42
    assert max(kv.txns) <= 128
    assert lister.calls == len(kv.txns) + kv.ranges <= 4
    assert sum(kv.txns) + kv.ranges == 300


async def test_a_prefix_does_not_get_its_neighbours_keys() -> None:
    kv = FakeKV({b"/s/web/a": b"1", b"/s/webx/b": b"2", b"/s/we": b"3"}, revision=7)
    lister = BatchLister(caller(FakeClient(kv)), timeout=1.0)
    web, webx = await asyncio.gather(lister.list(b"/s/web/"), lister.list(b"/s/webx/"))
    assert [k.key for k in web.kvs] == [b"/s/web/a"]
    assert [k.key for k in webx.kvs] == [b"/s/webx/b"]
    single = await lister.list(b"/s/web/")  # alone: one plain range call
    assert [k.key for k in single.kvs] == [b"/s/web/a"] and kv.ranges == 1


async def test_a_batch_refused_as_too_large_is_split_and_stays_smaller() -> None:
    kv = FakeKV(keyspace(40, 1), revision=3, max_ops=10)
    lister = BatchLister(caller(FakeClient(kv)), timeout=1.0, max_ops=32)
    listings = await asyncio.gather(*(lister.list(f"/s/svc{i}/".encode()) for i in range(40)))
    assert all(len(listing.kvs) == 1 for listing in listings)
    assert lister.max_ops <= 10
    assert max(kv.txns) <= 10


async def test_a_failed_call_fails_every_listing_of_its_batch() -> None:
    async def down(fn, timeout=None):
        raise aetcd.exceptions.ConnectionFailedError("etcd is down")

    lister = BatchLister(down, timeout=1.0)
    results = await asyncio.gather(
        *(lister.list(f"/s/svc{i}/".encode()) for i in range(5)), return_exceptions=True
    )
    assert all(isinstance(r, aetcd.exceptions.ConnectionFailedError) for r in results)
    assert lister.max_ops == 128  # not a size problem: batches stay as large


async def test_an_asker_that_gave_up_is_not_read_for() -> None:
    kv = FakeKV(keyspace(3, 1), revision=5)
    lister = BatchLister(caller(FakeClient(kv)), timeout=1.0)
    gone = asyncio.ensure_future(lister.list(b"/s/svc0/"))
    await asyncio.sleep(0)
    gone.cancel()
    kept = await lister.list(b"/s/svc1/")
    assert [k.key for k in kept.kvs] == [b"/s/svc1/k0"]
    assert kv.ranges == 1 and not kv.txns  # svc0 was not read
    with pytest.raises(asyncio.CancelledError):
        await gone
