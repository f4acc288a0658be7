"""issue 11: leader_election on etcd: the key created first (lowest create revision)."""

from __future__ import annotations

import asyncio
import json

import aetcd
from synapse_testlib import Collector, metrics, service_config

from smartstack.etcd import EtcdConnection
from synapse.selection import select_servers
from synapse.watchers import create_watcher
from synapse.watchers.base import WatcherContext


async def test_leader_is_the_earliest_created_key_even_after_rewrites(etcd) -> None:
    writer = aetcd.Client(host=etcd.host, port=etcd.port)
    await writer.connect()
    conn = EtcdConnection(etcd.endpoints, timeout=2.0)
    sink = Collector()
    ctx = WatcherContext(asyncio.get_running_loop(), metrics(), etcd_connection=lambda _: conn)
    cfg = service_config({"method": "etcd", "endpoints": etcd.endpoints, "path": "/lead/web"},
                         leader_election=True)  # fmt: skip

    async def put(name: str, port: int) -> None:
        value = {"host": "127.0.0.1", "port": port, "name": name}
        await writer.put(f"/lead/web/{name}".encode(), json.dumps(value).encode())

    async def leader(*hosts: str) -> list[int]:
        report = await sink.wait_hosts([f"127.0.0.1:{h}" for h in hosts])
        return [s.port for s in select_servers(cfg, report.found, None).servers]

    await put("zz", 8101)  # created first
    await put("aa", 8102)
    await put("zz", 8103)  # rewritten: still the first created
    watcher = create_watcher("lead", cfg, sink, ctx)
    await watcher.start()
    try:
        assert await leader("8102", "8103") == [8103]
        await writer.delete(b"/lead/web/zz")
        assert await leader("8102") == [8102]
        await put("zz", 8104)  # back, but created last now
        assert await leader("8102", "8104") == [8102]
    finally:
        await watcher.stop()
        await conn.close()
        await writer.close()
