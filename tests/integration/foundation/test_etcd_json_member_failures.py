"""etcd's JSON gateway connection and a member that fails its calls with an HTTP error and
the gateway's JSON body (504 DeadlineExceeded, 500 Unknown, 429 ResourceExhausted: a member
without quorum, overloaded, or a proxy before it): listings, keep-alives and watch creations
move to the next endpoint, as on 503; etcd's own refusals (a 4xx) do not move. And a watch's
member probed: one status request per connection, on one kept-alive connection."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import AsyncIterator

import pytest
from etcd_errproxy import ErrorProxy

from smartstack import etcd_json, etcd_json_probe
from smartstack.etcd_http import Exchange, HttpStatusError, Target
from smartstack.etcd_json import EtcdJsonConnection
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


async def test_moving_on_ends_the_watches_made_on_the_endpoint_left(
    etcd: EtcdCluster, proxy: ErrorProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As a gRPC client's stream ends with it: their watchers list and watch anew on the
    next endpoint, instead of staying silent on a member that failed a call."""
    conn = EtcdJsonConnection([proxy.endpoint, etcd.endpoints[0]], timeout=2, start=0)
    try:
        left = await conn.watch_prefix(b"/left/", 1)
        await conn.rotate("test: a call failed there")
        with pytest.raises(ConnectionError, match=f"left {proxy.endpoint}"):
            async with asyncio.timeout(2):
                async for _ in left:
                    pass
        # A watch whose creation the connection moved on from is made again where it is.
        real = etcd_json.open_stream

        async def moved_meanwhile(target: Target, path: str, payload: dict) -> Exchange:
            exchange = await real(target, path, payload)
            if conn.failovers == 1:
                await conn.rotate("test: another call failed meanwhile")
            return exchange

        monkeypatch.setattr(etcd_json, "open_stream", moved_meanwhile)
        again = await conn.watch_prefix(b"/left/", 1)
        assert conn.current_endpoint == proxy.endpoint
        assert proxy.counts["pass /v3/watch"] == 2  # the first, and this one made again
        await conn.rotate("test: and moving on from it")
        assert not again.live
    finally:
        await conn.close()


def handled_status_calls(etcd: EtcdCluster) -> int:
    """Status calls etcd answered (its gRPC server counts the gateway's too)."""
    with urllib.request.urlopen(f"{etcd.members[0].metrics_url}/metrics", timeout=2) as r:
        text = r.read().decode()
    mark = 'grpc_server_handled_total{grpc_code="OK",grpc_method="Status"'
    return sum(int(float(line.rsplit(" ", 1)[1])) for line in text.splitlines()
               if line.startswith(mark))  # fmt: skip


async def test_one_probe_per_connection_whatever_its_watches(
    etcd: EtcdCluster, proxy: ErrorProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(etcd_json_probe, "PROBE_INTERVAL", 0.5)
    conn = EtcdJsonConnection([proxy.endpoint], timeout=2)
    try:
        watches = [await conn.watch_prefix(f"/probe/{i}/".encode(), 1) for i in range(4)]
        before = handled_status_calls(etcd)
        await asyncio.sleep(4.2)  # eight intervals (each 0.5 s and the probe's own time)
        probes = handled_status_calls(etcd) - before
        assert 5 <= probes <= 9, probes  # one a interval, not one a watch (32)
        # All on one connection kept alive: no TCP (or TLS) handshake per probe.
        assert proxy.counts["pass /v3/maintenance/status"] == 1
        assert conn.failovers == 0 and all(w.live for w in watches)
        for watch in watches:
            await watch.cancel()
        await asyncio.sleep(1.2)
        settled = handled_status_calls(etcd)
        await asyncio.sleep(1.2)
        assert handled_status_calls(etcd) == settled  # no watch: no probe
    finally:
        await conn.close()
