"""nerve's etcd lease across a stall of the link shorter than the TTL: keep-alives every
sixth of the TTL (every third before) leave etcd without news for at most a sixth when the
stall begins, so a stall of 4/5 of the TTL keeps the lease. Before, a stall that began
just before a keep-alive left etcd silent for a third plus the stall: past the TTL, the
lease (and every registration on it) gone while healthy. Fakes only."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import pytest

from nerve.reporters.etcd_lease import LeaseKeeper, call_timeout, keepalive_interval
from smartstack.etcd_json_client import EtcdJsonKVConnection, KeptAlive

TTL = 3.0  # seconds: keep-alives every 0.5 s (kazoo-like every third: 1 s)
STALL_AFTER_S = 0.9  # after one keep-alive reached etcd: before the next at a third
STALL_S = 0.8 * TTL


def test_keepalives_go_every_sixth_of_the_ttl() -> None:
    assert keepalive_interval(5) == pytest.approx(5 / 6)
    assert LeaseKeeper(EtcdJsonKVConnection(["127.0.0.1:1"]), 5).interval == pytest.approx(5 / 6)


async def test_a_stall_of_four_fifths_of_the_ttl_keeps_the_lease(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    conn = EtcdJsonKVConnection(["127.0.0.1:1"], timeout=call_timeout(TTL), start=0)
    heard_at: list[float] = []  # when etcd received a keep-alive (it renews the lease then)
    stall = [0.0, 0.0]  # from, until (monotonic)

    async def keepalive(_client: Any, lease_id: int) -> KeptAlive:
        now = time.monotonic()
        if stall[0] <= now < stall[1]:
            await asyncio.sleep(stall[1] - now)  # held on the link until the stall ends
        heard_at.append(time.monotonic())
        return KeptAlive(lease_id, int(TTL))

    monkeypatch.setattr(conn, "keepalive", keepalive)
    keeper = LeaseKeeper(conn, int(TTL))
    keeper.lease_id, keeper.expires_at = 42, time.monotonic() + TTL  # just granted
    heard: list[str] = []
    keeper.add_listener(heard.append)
    keeper.start()
    try:
        async with asyncio.timeout(10):
            while not heard_at:
                await asyncio.sleep(0.005)
        stall[0] = heard_at[-1] + STALL_AFTER_S
        stall[1] = stall[0] + STALL_S
        await asyncio.sleep(stall[1] + 2 * TTL / 3 - time.monotonic())
    finally:
        await keeper.close(revoke=False)
    assert heard == [], "the lease was given up across a stall shorter than its TTL"
    assert heard_at[-1] > stall[1], heard_at  # renewed after the stall
    silences = [later - earlier for earlier, later in itertools.pairwise(heard_at)]
    assert max(silences) < TTL, silences  # etcd's view: the lease never ran out
