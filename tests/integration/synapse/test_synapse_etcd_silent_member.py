"""The etcd member carrying synapse's gRPC watch stream goes silent (packets dropped, no
RST: its sockets stay open): the stream's HTTP/2 keepalive notices, the watcher moves to the
next endpoint and hears a change made meanwhile, instead of at the 2-minute check."""

from __future__ import annotations

import asyncio
import json
import time

import aetcd
import aetcd.exceptions
import pytest
from blackhole import BlackholeRelay
from synapse_testlib import Collector, eventually, metrics, service_config

from smartstack import etcd as etcd_module
from smartstack.etcd import EtcdConnection
from synapse.discovery_config import DiscoveryConfig
from synapse.watchers.base import WatcherContext
from synapse.watchers.etcd import EtcdWatcher
from testbed.etcd import EtcdCluster

DETECTED_WITHIN_S = 25.0  # a ping every 10 s, answered within 5 s; the 2-minute check: 120 s


def record(port: int) -> bytes:
    return json.dumps({"host": "127.0.0.1", "port": port, "name": f"i{port}"}).encode()


async def test_a_change_reaches_synapse_soon_after_its_watch_member_goes_silent(
    etcd: EtcdCluster,
) -> None:
    path = "/syn/silentmember"
    conns: list[EtcdConnection] = []

    def connection(discovery: DiscoveryConfig) -> EtcdConnection:
        # Started on the relay (the first endpoint), then the member itself.
        conns.append(EtcdConnection(discovery.etcd_endpoint_list(), timeout=2.0, start=0))
        return conns[-1]

    async with aetcd.Client(host=etcd.host, port=etcd.port) as client:
        await client.put(f"{path}/a".encode(), record(8090))
        with BlackholeRelay(etcd.endpoints[0]) as relay:
            sink = Collector()
            retry = {"base_interval": 0.1, "max_interval": 1}
            endpoints = [relay.endpoint, etcd.endpoints[0]]
            cfg = service_config({"method": "etcd", "path": path, "endpoints": endpoints,
                                  "retry_policy": retry})  # fmt: skip
            ctx = WatcherContext(loop=asyncio.get_running_loop(), metrics=metrics(),
                                 etcd_connection=connection)  # fmt: skip
            watcher = EtcdWatcher("silentmember", cfg, sink, ctx)
            await watcher.start()
            try:
                await sink.wait_hosts(["127.0.0.1:8090"])
                # The watch is made (a creation waiting on a silent stream is given up
                # after the connection's timeout, keepalive or not).
                await eventually(lambda: watcher.connected, what="the watch")
                assert conns[0].current_endpoint == relay.endpoint
                relay.silence()
                silenced = time.monotonic()
                await client.put(f"{path}/b".encode(), record(8091))
                await sink.wait_hosts(["127.0.0.1:8090", "127.0.0.1:8091"],
                                      timeout=DETECTED_WITHIN_S)  # fmt: skip
                print(f"heard {time.monotonic() - silenced:.1f} s after the silence")
                assert conns[0].current_endpoint == etcd.endpoints[0]
            finally:
                await watcher.stop()
                for conn in conns:
                    await conn.close()


@pytest.mark.long
async def test_a_quiet_watch_stream_is_still_pinged(tmp_path, monkeypatch) -> None:
    """gRPC's defaults stop pinging after 2 pings without data (then once a minute) and wait
    60 s for an answer: a quiet watch on a silent member would go unnoticed that long. Pings
    every second here (etcd allowing it), so that a few of them go out before the silence."""
    monkeypatch.setitem(etcd_module.GRPC_OPTIONS, "grpc.keepalive_time_ms", 1000)
    args = ["--grpc-keepalive-min-time=500ms"]
    with EtcdCluster(1, workdir=tmp_path / "etcd", extra_args=args) as cluster, \
            BlackholeRelay(cluster.endpoints[0]) as relay:  # fmt: skip
        conn = EtcdConnection([relay.endpoint], timeout=2.0, start=0)
        try:
            watch = await conn.watch_prefix(b"/syn/quiet/", 1)
            ended = asyncio.ensure_future(anext(aiter(watch.batches()), None))
            await asyncio.sleep(6)  # quiet: ~5 pings, none of them with data
            assert not ended.done(), "the stream ended before the silence"
            relay.silence()
            silenced = time.monotonic()
            # A ping within 1 s, unanswered for 5 s.
            with pytest.raises(aetcd.exceptions.ConnectionFailedError, match="ping"):
                await asyncio.wait_for(ended, 10)
            print(f"ended {time.monotonic() - silenced:.1f} s after the silence")
        finally:
            await conn.close()
