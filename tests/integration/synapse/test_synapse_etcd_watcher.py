"""The etcd watcher against a real etcd 3.4, with records written by hand; the tests that
take ``transport`` run over gRPC and over etcd's JSON gateway (smartstack.etcd_json)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import aetcd
import aetcd.exceptions
import pytest
from synapse_testlib import Collector, eventually, metrics, service_config

from smartstack.etcd import EtcdConnection
from smartstack.etcd_json import EtcdJsonConnection
from smartstack.etcd_watch import WatchStream
from synapse.discovery_config import DiscoveryConfig
from synapse.watchers.base import WatcherContext
from synapse.watchers.etcd import EtcdWatcher
from testbed.etcd import EtcdCluster

CONNECTIONS = {"grpc": EtcdConnection, "json": EtcdJsonConnection}


@pytest.fixture(params=sorted(CONNECTIONS))
def transport(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
async def client(etcd: EtcdCluster) -> AsyncIterator[aetcd.Client]:
    c = aetcd.Client(host=etcd.host, port=etcd.port)
    await c.connect()
    yield c
    await c.close()


def record(port: int, name: str = "i", **extra) -> bytes:
    return json.dumps({"host": "127.0.0.1", "port": port, "name": name, **extra}).encode()


async def start_watcher(
    endpoints: list[str], path: str, transport: str = "grpc"
) -> tuple[EtcdWatcher, Collector]:
    sink = Collector()
    conns: list[EtcdConnection | EtcdJsonConnection] = []

    def connection(discovery: DiscoveryConfig) -> EtcdConnection | EtcdJsonConnection:
        conns.append(CONNECTIONS[transport](discovery.etcd_endpoint_list(), timeout=2.0))
        return conns[-1]

    cfg = service_config({"method": "etcd", "endpoints": endpoints, "path": path,
                          "retry_policy": {"base_interval": 0.1, "max_interval": 1}})  # fmt: skip
    ctx = WatcherContext(loop=asyncio.get_running_loop(), metrics=metrics(),
                         etcd_connection=connection)  # fmt: skip
    watcher = EtcdWatcher(path.strip("/").replace("/", "_"), cfg, sink, ctx)
    watcher._conns = conns  # closed by stop_watcher
    await watcher.start()
    return watcher, sink


async def stop_watcher(watcher: EtcdWatcher) -> None:
    await watcher.stop()
    for conn in watcher._conns:
        await conn.close()


async def test_keys_become_servers_change_and_leave(etcd, client, transport) -> None:
    await client.delete_prefix(b"/syn/web")  # the other transport's run wrote there too
    await client.put(b"/syn/web/a", record(8001, "a"))
    watcher, sink = await start_watcher(etcd.endpoints, "/syn/web", transport)
    try:
        await sink.wait_hosts(["127.0.0.1:8001"])
        await client.put(b"/syn/web/b", record(8002, "b"))
        await sink.wait_hosts(["127.0.0.1:8001", "127.0.0.1:8002"])
        await client.put(b"/syn/web/b", record(8003, "b"))
        await sink.wait_hosts(["127.0.0.1:8001", "127.0.0.1:8003"])
        await client.delete(b"/syn/web/a")
        report = await sink.wait_hosts(["127.0.0.1:8003"])
        assert report.found[0].origin == "etcd:/syn/web/b"
        # A neighbouring prefix is not ours.
        await client.put(b"/syn/webx/c", record(8004, "c"))
        await asyncio.sleep(0.2)
        assert sink.hosts() == ["127.0.0.1:8003"]
        # One prefix read, then everything came from the watch.
        assert watcher.relists == 1
        assert watcher.status()["transport"] == transport
    finally:
        await stop_watcher(watcher)


async def test_watchers_on_one_connection_list_together_and_watch_their_own(etcd, client) -> None:
    """Listings asked for together are one transaction; each watcher still sees only its
    own prefix, from the listing on through its watch."""
    for i in range(6):
        await client.put(f"/syn/many/s{i}/a".encode(), record(8100 + i, "a"))
    conn = EtcdConnection(etcd.endpoints, timeout=2.0)
    sinks, watchers = [], []
    ctx = WatcherContext(loop=asyncio.get_running_loop(), metrics=metrics(),
                         etcd_connection=lambda discovery: conn)  # fmt: skip
    try:
        for i in range(6):
            cfg = service_config({"method": "etcd", "endpoints": etcd.endpoints,
                                  "path": f"/syn/many/s{i}"})  # fmt: skip
            sinks.append(Collector())
            watchers.append(EtcdWatcher(f"s{i}", cfg, sinks[-1], ctx))
        await asyncio.gather(*(w.start() for w in watchers))
        for i, sink in enumerate(sinks):
            await sink.wait_hosts([f"127.0.0.1:{8100 + i}"])
        assert conn._lister is not None and conn._lister.calls < 6
        await eventually(lambda: all(w.connected for w in watchers), what="every watch")
        await client.put(b"/syn/many/s3/b", record(8200, "b"))
        await sinks[3].wait_hosts(["127.0.0.1:8103", "127.0.0.1:8200"])
        assert [sink.hosts() for sink in sinks[:3]] == [[f"127.0.0.1:{8100 + i}"] for i in range(3)]
        # Services removed and added at runtime: the others' watches go on.
        await watchers[0].stop()
        await client.put(b"/syn/many/s0/b", record(8201, "b"))
        cfg = service_config({"method": "etcd", "endpoints": etcd.endpoints,
                              "path": "/syn/many/s0"})  # fmt: skip
        sinks.append(Collector())
        watchers.append(EtcdWatcher("s0-again", cfg, sinks[-1], ctx))
        await watchers[-1].start()
        await sinks[-1].wait_hosts(["127.0.0.1:8100", "127.0.0.1:8201"])
        await client.delete(b"/syn/many/s5/a")
        await sinks[5].wait(lambda r: not r.found)
        assert sinks[0].hosts() == ["127.0.0.1:8100"]  # the stopped watcher heard nothing
    finally:
        await asyncio.gather(*(w.stop() for w in watchers))
        await conn.close()


async def test_hostile_values_are_skipped_and_counted(etcd, client, transport) -> None:
    await client.delete_prefix(b"/syn/hostile")
    await client.put(b"/syn/hostile/good", record(8010, "good"))
    await client.put(b"/syn/hostile/json", b"{nope")
    await client.put(b"/syn/hostile/nl", record(8011, "nl", host="127.0.0.1\nserver x 1.1.1.1:1"))
    await client.put(b"/syn/hostile/port", record(0, "port"))
    await client.put(b"/syn/hostile/huge", b'{"pad": "' + b"x" * 50_000 + b'"}')
    watcher, sink = await start_watcher(etcd.endpoints, "/syn/hostile", transport)
    try:
        report = await sink.wait(lambda r: r.skipped == 4)
        assert sink.hosts() == ["127.0.0.1:8010"]
        assert len(report.found) == 1
        # A key fixed later is used.
        await client.put(b"/syn/hostile/port", record(8012, "port"))
        await sink.wait(lambda r: r.skipped == 3 and len(r.found) == 2)
    finally:
        await stop_watcher(watcher)


async def test_etcd_restart_keeps_the_list_then_resumes(tmp_path: Path, transport) -> None:
    cluster = EtcdCluster(size=1, workdir=tmp_path / "etcd").start()
    c = aetcd.Client(host=cluster.host, port=cluster.port)
    try:
        await c.put(b"/syn/restart/a", record(8020, "a"))
        watcher, sink = await start_watcher(cluster.endpoints, "/syn/restart", transport)
        try:
            await sink.wait_hosts(["127.0.0.1:8020"])
            seen = len(sink.reports)
            await asyncio.to_thread(cluster.stop_member, 0)
            await eventually(lambda: not watcher.connected, what="the watcher to see etcd gone")
            await asyncio.to_thread(cluster.start_member, 0)
            await c.close()
            # A channel of its own: gRPC shares subchannels (and their reconnect backoff).
            c = aetcd.Client(host=cluster.host, port=cluster.port,
                             options={"grpc.use_local_subchannel_pool": 1})  # fmt: skip
            await c.put(b"/syn/restart/b", record(8021, "b"))
            await sink.wait_hosts(["127.0.0.1:8020", "127.0.0.1:8021"], timeout=20)
            assert all(r.found for r in sink.reports[seen:]), "the list was never emptied"
            assert watcher.relists >= 2
        finally:
            await stop_watcher(watcher)
    finally:
        await c.close()
        cluster.stop()


async def test_a_watch_from_a_compacted_revision_lists_again(
    etcd, client, monkeypatch, transport
) -> None:
    """The first listing claims a revision etcd has compacted since: the watch from it is
    refused (RevisionCompactedError), the watcher lists again and watches from there."""
    await client.delete_prefix(b"/syn/compact")
    for i in range(3):
        put = await client.put(b"/syn/compact/a", record(8050 + i, "a"))
    await client.compact(put.header.revision)
    real = CONNECTIONS[transport].list_prefix
    listings = []

    async def first_listing_stale(self, prefix, timeout):
        listing = await real(self, prefix, timeout)
        listings.append(listing.revision)
        if len(listings) == 1:
            listing.revision = 1  # long compacted
        return listing

    monkeypatch.setattr(CONNECTIONS[transport], "list_prefix", first_listing_stale)
    watcher, sink = await start_watcher(etcd.endpoints, "/syn/compact", transport)
    try:
        await eventually(lambda: watcher.connected and watcher.relists == 2, what="a relist")
        await client.put(b"/syn/compact/b", record(8060, "b"))
        await sink.wait_hosts(["127.0.0.1:8052", "127.0.0.1:8060"])
    finally:
        await stop_watcher(watcher)


class _SilentWatch:
    """What aetcd hands back after its stream closed cleanly: a watch that never delivers."""

    def __init__(self) -> None:
        self._cancelled = asyncio.Event()

    async def batches(self):
        await self._cancelled.wait()
        return
        yield  # an async generator that ends only when cancelled

    async def cancel(self) -> None:
        self._cancelled.set()


async def test_a_silently_dead_watch_is_found_and_replaced(etcd, client, monkeypatch) -> None:
    monkeypatch.setattr("synapse.watchers.etcd.RESYNC_INTERVAL", 0.2, raising=False)
    real = WatchStream.watch_prefix
    calls = []

    async def first_watch_silent(self, *args, **kwargs):
        calls.append(args)
        if len(calls) == 1:
            return _SilentWatch()
        return await real(self, *args, **kwargs)

    monkeypatch.setattr(WatchStream, "watch_prefix", first_watch_silent)
    await client.put(b"/syn/silent/a", record(8030, "a"))
    watcher, sink = await start_watcher(etcd.endpoints, "/syn/silent")
    try:
        await sink.wait_hosts(["127.0.0.1:8030"])
        await client.put(b"/syn/silent/b", record(8031, "b"))  # the silent watch misses it
        await sink.wait_hosts(["127.0.0.1:8030", "127.0.0.1:8031"])
        assert watcher.stale_watches == 1 and len(calls) == 2
        # The new watch is a real one: changes flow again.
        await client.delete(b"/syn/silent/a")
        await sink.wait_hosts(["127.0.0.1:8031"])
    finally:
        await stop_watcher(watcher)


async def test_a_watch_stream_that_stops_answering_is_abandoned(etcd, client, monkeypatch) -> None:
    """A stream that answers no creation is given up after the connection's timeout: the
    next attempt opens a new stream on the same, still answering, endpoint."""
    real = WatchStream._call
    streams: list[WatchStream] = []

    def first_stream_silent(self: WatchStream):
        streams.append(self)
        if len(streams) > 1:
            return real(self)

        async def silent(requests):
            async for _ in requests:  # etcd reads the creates and never answers
                pass
            return
            yield

        return silent(self._request_stream())

    monkeypatch.setattr(WatchStream, "_call", first_stream_silent)
    await client.put(b"/syn/nowatch/a", record(8040, "a"))
    watcher, sink = await start_watcher(etcd.endpoints, "/syn/nowatch")
    try:
        await eventually(lambda: watcher.connected, timeout=10, what="a watch on a new stream")
        assert len(streams) == 2 and streams[0].broken
        assert watcher.conn is not None and watcher.conn.failovers == 0  # the client is kept
        await client.put(b"/syn/nowatch/b", record(8041, "b"))
        await sink.wait_hosts(["127.0.0.1:8040", "127.0.0.1:8041"])
    finally:
        await stop_watcher(watcher)


async def test_the_member_watched_is_killed_and_another_takes_over(
    etcd_cluster: EtcdCluster, transport
) -> None:
    """A 3-member cluster: the member the watch is on dies (kill -9); the watcher moves to
    another endpoint, keeps its list meanwhile and hears what is written after."""
    endpoints = etcd_cluster.endpoints
    host, port = endpoints[0].rsplit(":", 1)
    c = aetcd.Client(host=host, port=int(port), options={"grpc.use_local_subchannel_pool": 1})
    try:
        await c.put(b"/syn/kill/a", record(8070, "a"))
        watcher, sink = await start_watcher(endpoints, "/syn/kill", transport)
        try:
            await sink.wait_hosts(["127.0.0.1:8070"])
            await eventually(lambda: watcher.connected, what="the watch")
            assert watcher.conn is not None
            victim = endpoints.index(watcher.conn.current_endpoint)
            seen = len(sink.reports)
            await asyncio.to_thread(etcd_cluster.kill_member, victim)
            await c.close()
            survivor = endpoints[(victim + 1) % len(endpoints)]
            host, port = survivor.rsplit(":", 1)
            c = aetcd.Client(host=host, port=int(port),
                             options={"grpc.use_local_subchannel_pool": 1})  # fmt: skip
            for _ in range(20):  # the killed member may have been the leader: an election
                try:
                    await c.put(b"/syn/kill/b", record(8071, "b"))
                    break
                except aetcd.exceptions.ClientError:
                    await asyncio.sleep(0.5)
            await sink.wait_hosts(["127.0.0.1:8070", "127.0.0.1:8071"], timeout=20)
            assert all(r.found for r in sink.reports[seen:]), "the list was never emptied"
            assert watcher.conn.current_endpoint != endpoints[victim]
        finally:
            await stop_watcher(watcher)
    finally:
        await c.close()
