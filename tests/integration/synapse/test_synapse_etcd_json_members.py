"""The etcd watcher on etcd's JSON gateway when a member fails it: one that answers every
call with an HTTP error (504: a synapse starting there lists from another member instead of
retrying it for ever), and one that stops answering under the watch (SIGSTOP: the status
probe leaves it, and a withdrawal is applied within seconds, not at the two-minute check)."""

from __future__ import annotations

import asyncio
import json

import aetcd
from etcd_errproxy import ErrorProxy
from synapse_testlib import Collector, eventually, metrics, service_config

from smartstack.etcd_json import EtcdJsonConnection
from synapse.watchers.base import WatcherContext
from synapse.watchers.etcd import EtcdWatcher
from testbed.etcd import EtcdCluster


def record(port: int) -> bytes:
    return json.dumps({"host": "127.0.0.1", "port": port, "name": f"i{port}"}).encode()


async def watching(conn: EtcdJsonConnection, path: str) -> tuple[EtcdWatcher, Collector]:
    """A started watcher of ``path`` on ``conn`` (closed with it by ``stop``)."""
    sink = Collector()
    cfg = service_config({"method": "etcd", "endpoints": conn.endpoints, "path": path,
                          "retry_policy": {"base_interval": 0.1, "max_interval": 1}})  # fmt: skip
    ctx = WatcherContext(loop=asyncio.get_running_loop(), metrics=metrics(),
                         etcd_connection=lambda _discovery: conn)  # fmt: skip
    watcher = EtcdWatcher(path.strip("/").replace("/", "_"), cfg, sink, ctx)
    await watcher.start()
    return watcher, sink


async def stop(watcher: EtcdWatcher, conn: EtcdJsonConnection) -> None:
    await watcher.stop()
    await conn.close()


async def test_a_synapse_starting_on_a_member_that_answers_504_lists_elsewhere(
    etcd: EtcdCluster,
) -> None:
    proxy = await ErrorProxy(etcd.endpoints[0]).start()
    proxy.mode = "504"
    async with aetcd.Client(host=etcd.host, port=etcd.port) as client:
        await client.put(b"/syn504/web/a", record(8081))
    conn = EtcdJsonConnection([proxy.endpoint, etcd.endpoints[0]], timeout=2, start=0)
    watcher, sink = await watching(conn, "/syn504/web")
    try:
        await sink.wait_hosts(["127.0.0.1:8081"], timeout=5)
        assert conn.current_endpoint == etcd.endpoints[0]
        assert proxy.counts["504 /v3/kv/range"] == 1  # asked once, not retried for ever
    finally:
        await stop(watcher, conn)
        await proxy.close()


async def test_a_withdrawal_under_a_paused_member_is_applied_within_seconds(
    etcd_cluster: EtcdCluster,
) -> None:
    endpoints = etcd_cluster.endpoints
    leader = etcd_cluster.leader_index()
    assert leader is not None
    victim = (leader + 1) % len(endpoints)  # a follower: no election to wait for
    host, port = endpoints[leader].rsplit(":", 1)
    async with aetcd.Client(host=host, port=int(port), timeout=2) as client:
        await client.put(b"/synpause/web/a", record(8081))
        await client.put(b"/synpause/web/b", record(8082))
        conn = EtcdJsonConnection(endpoints, timeout=2, start=victim)
        watcher, sink = await watching(conn, "/synpause/web")
        try:
            await sink.wait_hosts(["127.0.0.1:8081", "127.0.0.1:8082"], timeout=5)
            await eventually(lambda: watcher.connected, what="the watch")  # made: now silent
            assert conn.current_endpoint == endpoints[victim]
            etcd_cluster.pause_member(victim)
            try:
                await asyncio.sleep(0.5)  # the watch is silent now, its connection open
                await client.delete(b"/synpause/web/b")  # nerve withdrew it
                # A probe every 2 s, 1.5 s to answer, twice, then a listing elsewhere
                # (~5 s; the paused member never tells: the wait has room for a slow CI)
                await sink.wait_hosts(["127.0.0.1:8081"], timeout=15)
                assert conn.current_endpoint != endpoints[victim]
            finally:
                etcd_cluster.resume_member(victim)
        finally:
            await stop(watcher, conn)
