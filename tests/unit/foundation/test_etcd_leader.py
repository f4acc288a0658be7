"""An etcd member cut off from its peers still answers but has no leader: connections move
off it (status probe, streams that require a leader), and start on a random endpoint so that
a fleet spreads over the members. Fakes only: no etcd, no socket."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aetcd.exceptions
import aetcd.rpc
import grpc
import pytest

from smartstack import etcd_json
from smartstack.etcd import CONNECTION_ERRORS, EtcdConnection, refresh_lease
from smartstack.etcd_events import Endpoints
from smartstack.etcd_json import EtcdJsonConnection
from smartstack.etcd_watch import WatchStream

ENDPOINTS = ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]
NO_LEADER = grpc.aio.AioRpcError(
    grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "etcdserver: no leader"
)


class Member:
    """A connected aetcd client of one member that answers status (``leader``: 0, none);
    without a leader, a read or write waits for ever (what etcd does until the deadline)."""

    _timeout = 1.0
    metadata = (("token", "t"),)

    def __init__(self, name: str, leader: int) -> None:
        self.name, self.leader = name, leader
        self.maintenancestub = self
        self.channel = self
        self.leasestub = self
        self.sent_metadata: list[Any] = []

    async def connect(self) -> None:
        return None

    async def status(self) -> Any:  # aetcd's: answers on a leaderless member too
        return aetcd.rpc.StatusResponse(leader=self.leader)

    async def Status(self, request: Any, timeout: float, metadata: Any) -> Any:
        return aetcd.rpc.StatusResponse(leader=self.leader)

    async def get(self) -> str:
        if self.leader == 0:
            await asyncio.Event().wait()
        return self.name

    async def close(self) -> None:
        return None

    # gRPC's side of a stream call (WatchStub's Watch, leasestub's LeaseKeepAlive).
    def stream_stream(self, *args: Any, **kwargs: Any) -> Any:
        return self.open

    def open(self, requests: Any, metadata: Any = None, **kwargs: Any) -> AsyncIterator[Any]:
        self.sent_metadata.append(metadata)
        return self._answers(requests)

    async def _answers(self, requests: Any) -> AsyncIterator[Any]:
        async for request in _aiter(requests):
            if self.leader == 0:
                raise NO_LEADER
            if isinstance(request, aetcd.rpc.LeaseKeepAliveRequest):
                yield aetcd.rpc.LeaseKeepAliveResponse(ID=request.ID, TTL=5)
            elif request.HasField("create_request"):
                yield aetcd.rpc.WatchResponse(created=True, watch_id=1)

    def LeaseKeepAlive(self, requests: Any, timeout: float, metadata: Any) -> Any:
        return self.open(requests, metadata)


async def _aiter(items: Any) -> AsyncIterator[Any]:
    if hasattr(items, "__aiter__"):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item


def connection(members: dict[str, Member], monkeypatch, timeout: float = 0.2) -> EtcdConnection:
    conn = EtcdConnection(list(members), timeout=timeout, start=0)

    async def client() -> Any:
        if conn._client is None:
            conn._client = members[conn.current_endpoint]  # type: ignore[assignment]
        return conn._client

    monkeypatch.setattr(conn, "client", client)
    return conn


async def test_a_call_timing_out_on_a_member_without_a_leader_moves_on(monkeypatch) -> None:
    members = {ENDPOINTS[0]: Member("cut off", leader=0), ENDPOINTS[1]: Member("ok", leader=7)}
    conn = connection(members, monkeypatch)
    assert await asyncio.wait_for(conn.with_client(lambda c: c.get()), 3) == "ok"
    assert conn.failovers == 1 and conn.current_endpoint == ENDPOINTS[1]


async def test_a_call_timing_out_on_a_member_with_a_leader_stays(monkeypatch) -> None:
    slow = Member("slow", leader=7)
    slow.get = lambda: asyncio.sleep(5)  # type: ignore[method-assign]  # busy, not cut off
    conn = connection({ENDPOINTS[0]: slow, ENDPOINTS[1]: Member("ok", leader=7)}, monkeypatch)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(conn.with_client(lambda c: c.get()), 3)
    assert conn.failovers == 0 and conn._client is slow


async def test_a_member_that_loses_its_leader_later_is_left_at_the_next_timeout(monkeypatch):
    """A probe that found a leader once is not the answer for ever."""
    member = Member("slow, then cut off", leader=7)
    member_get = member.get
    member.get = lambda: asyncio.sleep(5)  # type: ignore[method-assign]  # busy first
    conn = connection({ENDPOINTS[0]: member, ENDPOINTS[1]: Member("ok", leader=7)}, monkeypatch)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(conn.with_client(lambda c: c.get()), 3)
    member.leader, member.get = 0, member_get  # type: ignore[method-assign]
    assert await asyncio.wait_for(conn.with_client(lambda c: c.get()), 3) == "ok"
    assert conn.failovers == 1


async def test_watch_streams_require_a_leader_and_its_loss_is_a_connection_error() -> None:
    member = Member("m", leader=7)
    stream = WatchStream(member)  # type: ignore[arg-type]
    await asyncio.wait_for(stream.watch_prefix(b"/s/a/", 1), 2)
    assert member.sent_metadata == [(("token", "t"), ("hasleader", "true"))]
    await stream.close()
    member.leader = 0  # etcd refuses (or ends) the stream: the watcher moves on
    refused = WatchStream(member)  # type: ignore[arg-type]
    with pytest.raises(CONNECTION_ERRORS):
        await asyncio.wait_for(refused.watch_prefix(b"/s/a/", 1), 2)
    assert refused.broken


async def test_lease_keep_alives_require_a_leader() -> None:
    member = Member("m", leader=7)
    reply = await refresh_lease(member, 42)  # type: ignore[arg-type]
    assert (reply.ID, reply.TTL) == (42, 5)
    assert member.sent_metadata == [(("token", "t"), ("hasleader", "true"))]
    member.leader = 0
    with pytest.raises(aetcd.exceptions.ConnectionFailedError):  # with_client: next endpoint
        await refresh_lease(member, 42)  # type: ignore[arg-type]


async def test_json_gateway_watches_require_a_leader(monkeypatch) -> None:
    headers: list[dict[str, str]] = []

    async def open_stream(target: Any, path: str, payload: dict) -> Any:
        headers.append(target.headers)
        raise ConnectionError("etcdserver: no leader")

    monkeypatch.setattr(etcd_json, "open_stream", open_stream)
    conn = EtcdJsonConnection(ENDPOINTS[:2], timeout=1, start=0)
    with pytest.raises(ConnectionError):
        await conn.watch_prefix(b"/s/a/", 1)
    # The gateway passes Grpc-Metadata-* headers on as gRPC metadata; each endpoint tried.
    assert headers == [{"Grpc-Metadata-hasleader": "true"}] * 2 and conn.failovers == 2


def test_each_connection_starts_on_a_random_endpoint_and_goes_round_from_there() -> None:
    # 100 daemons on 3 members: all on one would be (1/3)^99; one member left out, ~1e-17.
    assert {Endpoints(ENDPOINTS).current_endpoint for _ in range(100)} == set(ENDPOINTS)
    conn = Endpoints(ENDPOINTS, start=1)  # pinned (tests that need an order)
    seen = [conn.current_endpoint]
    for _ in range(3):
        conn._next_endpoint("failed")
        seen.append(conn.current_endpoint)
    assert seen == [ENDPOINTS[1], ENDPOINTS[2], ENDPOINTS[0], ENDPOINTS[1]]
