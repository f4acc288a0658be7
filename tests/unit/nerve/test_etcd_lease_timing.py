"""nerve's etcd lease keeping when the member in use hangs (a stalled host, a blackhole):
the keep-alive schedule leaves the next member time to renew the lease, on gRPC and on
etcd's JSON gateway. Fakes only."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import aetcd.rpc

from nerve.reporters.etcd_lease import (
    LeaseKeeper,
    call_timeout,
    keepalive_timeout,
    retry_pause,
    worst_renewal,
)
from smartstack import etcd_json_client
from smartstack.etcd import EtcdConnection
from smartstack.etcd_http import KeptLine, Target
from smartstack.etcd_json_client import EtcdJsonKVConnection

ENDPOINTS = ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]


def test_a_hung_member_costs_at_most_half_of_any_ttl() -> None:
    for ttl in [2, 2.5, 3, 5, 6, 9, 10, 30, 300]:
        per_call = call_timeout(ttl)
        assert worst_renewal(ttl, per_call) <= ttl / 2 + 1e-9, ttl
    assert round(worst_renewal(5, call_timeout(5)), 3) == 2.5  # the default TTL
    assert worst_renewal(30, call_timeout(30)) == 8.0  # the 3 s cap


def test_a_keepalive_never_waits_into_the_last_third_of_the_lease_nor_too_little() -> None:
    ttl, per_call = 6.0, call_timeout(6.0)  # 2 s
    assert keepalive_timeout(per_call, ttl, remaining=4.0) == 2.0  # a regular one
    assert keepalive_timeout(per_call, ttl, remaining=6.0) == 2.0  # bounded by the call's
    assert keepalive_timeout(per_call, ttl, remaining=3.0) == 1.0  # late: 2 s left after it
    # Later still (or the lease is past our estimate): etcd must still be able to answer.
    assert keepalive_timeout(per_call, ttl, remaining=2.0) == per_call / 3
    assert keepalive_timeout(per_call, ttl, remaining=-5.0) == per_call / 3


def test_after_every_member_failed_the_retries_come_as_often_as_before() -> None:
    # A sixth of the TTL: as when keep-alives went every third (retries at half of that)
    assert retry_pause(2) == 1 / 3
    assert retry_pause(5) == 5 / 6
    assert retry_pause(60) == 1.0


class Member:
    """A member's connected aetcd client: grants and renews the lease and answers status,
    until ``hang_after`` renewals; then every call waits for ever (SIGSTOP, sockets open)."""

    _timeout = 1.0
    metadata = (("token", "t"),)

    def __init__(self, name: str, renewals: list[tuple[float, str]], hang_after: int = -1) -> None:
        self.name, self.renewals, self.hang_after = name, renewals, hang_after
        self.leasestub = self.maintenancestub = self

    async def connect(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def _answer(self) -> None:
        if self.hang_after == 0:
            await asyncio.Event().wait()
        self.hang_after -= 1
        self.renewals.append((time.monotonic(), self.name))

    async def lease(self, ttl: float) -> Any:
        await self._answer()
        return SimpleNamespace(id=42, ttl=ttl)

    async def Status(self, request: Any, timeout: float, metadata: Any) -> Any:
        if self.hang_after == 0:
            await asyncio.Event().wait()
        return aetcd.rpc.StatusResponse(leader=7)

    def LeaseKeepAlive(self, requests: Any, timeout: float, metadata: Any) -> Any:
        return self._keepalive(requests)

    async def _keepalive(self, requests: Any) -> AsyncIterator[Any]:
        for request in requests:
            await self._answer()
            # Whole seconds (etcd's), at least the test's TTL: the call timeout bounds a wait.
            yield aetcd.rpc.LeaseKeepAliveResponse(ID=request.ID, TTL=2)


async def _hang_and_fail_over(conn: Any, ttl: float, renewals: list[tuple[float, str]]) -> None:
    """Keep a lease on ``conn`` (whose first member hangs after the grant and one keep-alive)
    until the next member renewed it twice; every renewal came in time."""
    keeper = LeaseKeeper(conn, ttl)  # type: ignore[arg-type]
    heard: list[str] = []
    keeper.add_listener(heard.append)
    keeper.start()
    try:
        assert await asyncio.wait_for(keeper.lease(), 1) == 42
        async with asyncio.timeout(4 * ttl):  # two renewals on the next member
            while [name for _, name in renewals].count("b") < 2:
                await asyncio.sleep(0.02)
    finally:
        await keeper.close(revoke=False)
    assert [name for _, name in renewals][:3] == ["a", "a", "b"]
    gaps = [later - earlier for (earlier, _), (later, _) in itertools.pairwise(renewals)]
    # The renewal after the hang: an interval and one keep-alive timeout (0.8 s), not an
    # interval, a timeout and a status probe of the hung member (1.2 s: the lease gone).
    assert max(gaps) < ttl, gaps
    assert heard == [] and conn.current_endpoint == ENDPOINTS[1]


async def test_a_member_hanging_right_after_a_renewal_is_left_before_the_lease_expires(
    monkeypatch,
) -> None:
    ttl = 1.2  # seconds, scaled down: keep-alives every 0.2 s, each waiting 0.4 s at most
    renewals: list[tuple[float, str]] = []
    members = {
        ENDPOINTS[0]: Member("a", renewals, hang_after=2),  # the grant, one keep-alive
        ENDPOINTS[1]: Member("b", renewals),
        ENDPOINTS[2]: Member("c", renewals),
    }
    conn = EtcdConnection(ENDPOINTS, timeout=call_timeout(ttl), start=0)

    async def client() -> Any:
        if conn._client is None:
            conn._client = members[conn.current_endpoint]  # type: ignore[assignment]
        return conn._client

    monkeypatch.setattr(conn, "client", client)
    await _hang_and_fail_over(conn, ttl, renewals)


async def test_on_the_json_gateway_too(monkeypatch) -> None:
    """The same hang on etcd's gateway: each call is a connection of its own, the grant
    and keep-alives are HTTP calls (faked here by endpoint), and a keep-alive that times
    out moves on at once too."""
    ttl = 1.2
    renewals: list[tuple[float, str]] = []
    members = {
        ENDPOINTS[0]: Member("a", renewals, hang_after=2),
        ENDPOINTS[1]: Member("b", renewals),
        ENDPOINTS[2]: Member("c", renewals),
    }

    def member(target: Target) -> Member:
        return members[f"{target.host}:{target.port}"]

    async def call(target: Target, path: str, payload: dict) -> dict:
        assert path == "/v3/lease/grant", path
        await member(target)._answer()
        return {"ID": "42", "TTL": ttl}

    async def keepalive(_line: KeptLine, target: Target, path: str, payload: dict) -> dict:
        assert path == "/v3/lease/keepalive" and target.headers["Grpc-Metadata-hasleader"]
        await member(target)._answer()
        return {"result": {"ID": payload["ID"], "TTL": "2"}}

    monkeypatch.setattr(etcd_json_client, "call", call)
    monkeypatch.setattr(KeptLine, "post", keepalive)  # a keep-alive on the kept connection
    conn = EtcdJsonKVConnection(ENDPOINTS, timeout=call_timeout(ttl), start=0)
    await _hang_and_fail_over(conn, ttl, renewals)
