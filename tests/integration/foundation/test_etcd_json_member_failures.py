"""etcd's JSON gateway connection and a member that fails its calls with an HTTP error and
the gateway's JSON body (504 DeadlineExceeded, 500 Unknown, 429 ResourceExhausted: a member
without quorum, overloaded, or a proxy before it): listings, keep-alives and watch creations
move to the next endpoint, as on 503; etcd's own refusals (a 4xx) do not move."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from etcd_errproxy import ErrorProxy

from smartstack.etcd_http import HttpStatusError
from smartstack.etcd_json_client import EtcdJsonKVConnection
from testbed.etcd import EtcdCluster


@pytest.fixture
async def proxy(etcd: EtcdCluster) -> AsyncIterator[ErrorProxy]:
    p = await ErrorProxy(etcd.endpoints[0]).start()
    yield p
    await p.close()


@pytest.mark.parametrize("mode", ["504", "500", "429"])
async def test_calls_move_off_a_member_that_answers_an_error(
    etcd: EtcdCluster, proxy: ErrorProxy, mode: str
) -> None:
    member = etcd.endpoints[0]
    conn = EtcdJsonKVConnection([proxy.endpoint, member], timeout=2, start=1)
    try:
        lease = await conn.with_client(lambda c: c.lease(30))
        proxy.mode = mode
        calls = {
            "listing": lambda: conn.list_prefix(b"/errors/", 5),
            "keep-alive": lambda: conn.with_client(lambda c: conn.keepalive(c, lease.id)),
            "watch": lambda: conn.watch_prefix(b"/errors/", 1),
        }
        for what, made in calls.items():
            await conn.rotate("test: onto the failing member")
            assert conn.current_endpoint == proxy.endpoint
            result = await made()
            assert conn.current_endpoint == member, what
            if what == "keep-alive":
                assert result.TTL > 0
        assert proxy.counts[f"{mode} /v3/kv/range"] == 1
        assert proxy.counts[f"{mode} /v3/lease/keepalive"] == 1
        assert proxy.counts[f"{mode} /v3/watch"] == 1
    finally:
        await conn.close()


async def test_etcd_s_own_refusal_is_raised_where_it_was_made(
    etcd: EtcdCluster, proxy: ErrorProxy
) -> None:
    """What the fix must not do: move on when etcd refused a call (it would be refused
    everywhere, after a tour of the members)."""
    conn = EtcdJsonKVConnection([proxy.endpoint, etcd.endpoints[0]], timeout=2, start=0)
    try:
        with pytest.raises(HttpStatusError) as refused:
            await conn.with_client(lambda c: c.revoke_lease(0x5EED))  # no such lease
        assert refused.value.status == 404  # NotFound: the member answered; no failover
        assert conn.failovers == 0
    finally:
        await conn.close()
