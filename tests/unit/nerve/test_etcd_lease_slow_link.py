"""nerve's etcd lease over a slow, lossy link (300 ms RTT, a lost packet sent again a
moment later): a keep-alive answered after its patience still renews the lease, on gRPC
and on etcd's JSON gateway. Before, it was cancelled at its timeout and asked again with a
third of a call's time, which on such a link could not be answered either: the lease was
lost (measured: 3-4 times in 90 s at 1 % loss). Fakes only."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from nerve.reporters.etcd_lease import LeaseKeeper, call_timeout
from smartstack.etcd import EtcdConnection
from smartstack.etcd_json_client import EtcdJsonKVConnection, KeptAlive

TTL = 1.2  # seconds, scaled down: keep-alives every 0.2 s, each alone for 0.4 s at most
SLOW = 0.6  # every answer comes this late: past a keep-alive's patience, within the lease


class Channel:
    """gRPC's client: nothing to connect or close (the keep-alive itself is faked)."""

    async def connect(self) -> None:
        return None

    async def close(self) -> None:
        return None


@pytest.mark.parametrize("transport", ["grpc", "json"])
async def test_a_keepalive_answered_late_still_renews_the_lease(
    monkeypatch: pytest.MonkeyPatch, transport: str
) -> None:
    endpoints = ["127.0.0.1:1"]  # one member: nowhere else to go
    conn: Any
    if transport == "grpc":
        conn = EtcdConnection(endpoints, timeout=call_timeout(TTL), start=0)
        channel = Channel()

        async def client() -> Any:
            return channel

        monkeypatch.setattr(conn, "client", client)
    else:
        conn = EtcdJsonKVConnection(endpoints, timeout=call_timeout(TTL), start=0)
    renewed: list[float] = []

    async def keepalive(_client: Any, lease_id: int) -> KeptAlive:
        await asyncio.sleep(SLOW)  # the request's packet lost and sent again
        renewed.append(time.monotonic())
        return KeptAlive(lease_id, 2)  # whole seconds, as etcd says them

    monkeypatch.setattr(conn, "keepalive", keepalive)
    keeper = LeaseKeeper(conn, TTL)  # type: ignore[arg-type]
    keeper.lease_id, keeper.expires_at = 42, time.monotonic() + TTL  # just granted
    heard: list[str] = []
    keeper.add_listener(heard.append)
    keeper.start()
    try:
        await asyncio.sleep(8 * TTL / 3)  # sixteen intervals
    finally:
        await keeper.close(revoke=False)
    assert heard == [], "the lease was given up while every keep-alive was answered"
    assert len(renewed) >= 3, renewed
