"""issue 11: the ``multi`` watcher and ``leader_election`` against a real ZooKeeper."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from kazoo.client import KazooClient
from synapse_testlib import Collector, metrics, service_config

from smartstack.zookeeper import ZooKeeperPool
from synapse.selection import select_servers
from synapse.watchers import create_watcher
from synapse.watchers.base import WatcherContext
from synapse.watchers.multi import MultiWatcher


@pytest.fixture
async def pool() -> AsyncIterator[ZooKeeperPool]:
    pool = ZooKeeperPool(asyncio.get_running_loop())
    yield pool
    await pool.close_all()


def register(writer: KazooClient, path: str, port: int, name: str) -> str:
    data = json.dumps({"host": "127.0.0.1", "port": port, "name": name}).encode()
    return writer.create(f"{path}/{name}_", data, sequence=True, makepath=True)


def zk_block(zk, path: str) -> dict:
    return {"method": "zookeeper", "hosts": [zk.hosts], "path": path}


async def start(pool, service: str, cfg) -> tuple[Any, Collector]:
    sink = Collector()
    ctx = WatcherContext(loop=asyncio.get_running_loop(), metrics=metrics(), zk_pool=pool)
    watcher = create_watcher(service, cfg, sink, ctx)
    assert isinstance(watcher, MultiWatcher) == (cfg.discovery.method == "multi")
    await watcher.start()
    return watcher, sink


async def test_sequential_falls_back_to_the_second_path_while_the_first_is_empty(
    zk, writer, pool
) -> None:
    first, second = "/multi/seq/primary", "/multi/seq/secondary"
    writer.ensure_path(first)
    register(writer, second, 9101, "b")
    writer.set(second, json.dumps({"haproxy": {"server_options": "maxconn 3"}}).encode())
    cfg = service_config(
        {
            "method": "multi",
            "watchers": {"primary": zk_block(zk, first), "secondary": zk_block(zk, second)},
            "resolver": {"method": "sequential", "sequential_order": ["primary", "secondary"]},
        }
    )
    watcher, sink = await start(pool, "seq", cfg)
    try:
        report = await sink.wait_hosts(["127.0.0.1:9101"])
        assert watcher.chosen == "secondary"
        assert report.generator_config == {"haproxy": {"server_options": "maxconn 3"}}
        a = register(writer, first, 9100, "a")  # the first has servers again: it wins
        report = await sink.wait_hosts(["127.0.0.1:9100"])
        assert watcher.chosen == "primary" and report.generator_config == {}
        writer.delete(a)
        await sink.wait_hosts(["127.0.0.1:9101"])
        assert watcher.status()["watchers"]["primary"]["method"] == "zookeeper"
    finally:
        await watcher.stop()


async def test_union_merges_both_paths_and_discovery_multi_adds_primary(zk, writer, pool) -> None:
    first, second = "/multi/union/a", "/multi/union/b"
    register(writer, first, 9200, "a")
    register(writer, second, 9201, "b")
    register(writer, second, 9200, "a")  # the same server in both: one after selection
    cfg = service_config(
        zk_block(zk, first),  # Airbnb's discovery_multi: `discovery` becomes 'primary'
        discovery_multi={
            "resolver": {"method": "union"},
            "watchers": {"other": zk_block(zk, second)},
        },
    )
    watcher, sink = await start(pool, "union", cfg)
    try:
        report = await sink.wait_hosts(["127.0.0.1:9200", "127.0.0.1:9200", "127.0.0.1:9201"])
        names = [s.name for s in select_servers(cfg, report.found, None).servers]
        assert sorted(names) == ["a_127.0.0.1:9200", "b_127.0.0.1:9201"]
        register(writer, second, 9202, "c")
        await sink.wait_hosts(
            ["127.0.0.1:9200", "127.0.0.1:9200", "127.0.0.1:9201", "127.0.0.1:9202"]
        )
    finally:
        await watcher.stop()


async def test_leader_election_routes_to_the_lowest_sequence(zk, writer, pool) -> None:
    path = "/multi/leader/svc"
    first = register(writer, path, 9300, "z-first")  # lowest sequence, highest name
    register(writer, path, 9301, "a-second")
    cfg = service_config(zk_block(zk, path), leader_election=True)
    watcher, sink = await start(pool, "leader", cfg)
    try:
        report = await sink.wait_hosts(["127.0.0.1:9300", "127.0.0.1:9301"])
        chosen = select_servers(cfg, report.found, None)
        assert [s.name for s in chosen.servers] == ["z-first_127.0.0.1:9300"]
        assert chosen.records[0]["id"] == int(first.rsplit("_", 1)[1])
        writer.delete(first)  # the leader leaves: the next in sequence takes over
        report = await sink.wait_hosts(["127.0.0.1:9301"])
        assert [s.port for s in select_servers(cfg, report.found, None).servers] == [9301]
    finally:
        await watcher.stop()


async def test_generator_settings_in_the_path_data_are_watched(zk, writer, pool) -> None:
    path = "/multi/generator/svc"
    register(writer, path, 9400, "a")
    watcher, sink = await start(pool, "generator", service_config(zk_block(zk, path)))
    off, off_sink = await start(
        pool,
        "generator-off",
        service_config({**zk_block(zk, path), "generator_config_path": "disabled"}),
    )
    try:
        await sink.wait_hosts(["127.0.0.1:9400"])
        settings = {"haproxy": {"backend": ["balance first"]}, "nonsense": 1}
        writer.set(path, json.dumps(settings).encode())
        report = await sink.wait(lambda r: r.generator_config != {})
        assert report.generator_config == {"haproxy": {"backend": ["balance first"]}}
        writer.set(path, b"")  # emptied: no settings any more
        await sink.wait(lambda r: r.generator_config == {})
        assert all(r.generator_config == {} for r in off_sink.reports)
        assert off_sink.reports, "the disabled watcher reported its servers"
    finally:
        await watcher.stop()
        await off.stop()
