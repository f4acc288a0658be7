"""nerve's lease keep-alives on etcd's JSON gateway go on one connection kept between them:
on a slow link a keep-alive costs one round trip, not a TCP handshake first (300 ms RTT:
0.6 s, and a lost SYN a second more, against the 0.56 s a late keep-alive had), and a
member that starts failing is still left on the next keep-alive."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from etcd_errproxy import ErrorProxy
from nerve_testlib import until

from nerve.reporters.etcd_lease import LeaseKeeper, call_timeout
from smartstack.etcd_json_client import EtcdJsonKVConnection
from testbed.etcd import EtcdCluster

TTL = 2  # keep-alives every 0.67 s


@pytest.fixture
async def proxy(etcd: EtcdCluster) -> AsyncIterator[ErrorProxy]:
    p = await ErrorProxy(etcd.endpoints[0]).start()
    yield p
    await p.close()


async def test_keepalives_share_one_kept_connection(etcd: EtcdCluster, proxy: ErrorProxy) -> None:
    conn = EtcdJsonKVConnection([proxy.endpoint], timeout=call_timeout(TTL))
    answered: list[int] = []
    keepalive = conn.keepalive

    async def keepalive_and_count(client: Any, lease_id: int) -> Any:
        reply = await keepalive(client, lease_id)
        answered.append(reply.TTL)
        return reply

    conn.keepalive = keepalive_and_count  # type: ignore[method-assign]
    keeper = LeaseKeeper(conn, TTL)
    heard: list[str] = []
    keeper.add_listener(heard.append)
    keeper.start()
    try:
        await keeper.lease()
        await until(lambda: len(answered) >= 5, 20 * TTL, "five keep-alives answered")
        assert proxy.counts["pass /v3/lease/keepalive"] == 1, proxy.counts  # one connection
        # A member that fails from now on is seen by the next keep-alive on that connection.
        proxy.fail("504")
        await until(lambda: proxy.counts["504 /v3/lease/keepalive"] >= 1, 5 * TTL, "a refusal")
    finally:
        await keeper.close(revoke=False)
    assert heard == [] and all(ttl > 0 for ttl in answered), (heard, answered)
