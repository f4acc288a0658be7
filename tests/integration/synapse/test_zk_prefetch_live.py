"""A created child's read started in kazoo's thread with its event (smartstack.zk_prefetch),
against a real ZooKeeper: one read per added child, and quick creates and deletes (the
watcher must end without a child that is gone, and with every one that stays)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from synapse_testlib import eventually

from smartstack.zk_prefetch import MAX_WAITING
from smartstack.zookeeper import ZooKeeperPool

from test_synapse_zookeeper_watcher import record, register, start_watcher  # isort: skip


@pytest.fixture
async def pool() -> AsyncIterator[ZooKeeperPool]:
    pool = ZooKeeperPool(asyncio.get_running_loop())
    yield pool
    await pool.close_all()


@contextlib.asynccontextmanager
async def watching(zk: Any, pool: ZooKeeperPool, path: str, first: str) -> AsyncIterator[Any]:
    """A watcher of ``path`` once it reports ``first`` (host:port), stopped after."""
    watcher, sink = await start_watcher(zk, pool, path)
    try:
        await sink.wait_hosts([first])
        yield watcher, sink
    finally:
        await watcher.stop()


async def test_an_added_child_is_read_once_from_kazoos_thread(zk, writer, pool) -> None:
    path = "/hand/one"
    register(writer, path, 8201, "a")
    async with watching(zk, pool, path, "127.0.0.1:8201") as (watcher, sink):
        assert watcher._armed and watcher.conn is not None
        started = watcher.conn.prefetch.started
        register(writer, path, 8202, "b")
        await sink.wait_hosts(["127.0.0.1:8201", "127.0.0.1:8202"])
        assert watcher.conn.prefetch.started == started + 1  # (with its event)
        assert watcher.reads == 2 and watcher.conn.prefetch._waiting == 0


async def test_children_created_and_deleted_at_once_end_gone(zk, writer, pool) -> None:
    """Creations, deletions and creations of other children, pipelined: the events and
    the reads started with them cross to the loop in kazoo's order."""
    path = "/hand/flicker"
    register(writer, path, 8210, "anchor")
    async with watching(zk, pool, path, "127.0.0.1:8210") as (watcher, sink):
        writes = []
        for i in range(20):  # pipelined: create, delete, create (kept) of distinct children
            gone, kept = f"{path}/g{i}", f"{path}/k{i}"
            writes.append(writer.create_async(gone, record(8300 + i, f"g{i}")))
            writes.append(writer.delete_async(gone))
            writes.append(writer.create_async(kept, record(8400 + i, f"k{i}")))
        await asyncio.to_thread(lambda: [w.get(timeout=10) for w in writes])
        want = ["127.0.0.1:8210"] + [f"127.0.0.1:{8400 + i}" for i in range(20)]
        await sink.wait_hosts(want)
        await asyncio.sleep(0.3)  # nothing late may bring a deleted one back
        assert sink.hosts() == sorted(want)
        assert watcher.conn is not None and watcher.conn.prefetch._waiting == 0


async def test_many_children_created_at_once_all_arrive(zk, writer, pool) -> None:
    path = "/hand/burst"
    register(writer, path, 8500, "anchor")
    async with watching(zk, pool, path, "127.0.0.1:8500") as (watcher, sink):
        count = MAX_WAITING * 6  # most past MAX_WAITING: read the usual way
        writes = [
            writer.create_async(f"{path}/c{i}", record(8501 + i, f"c{i}")) for i in range(count)
        ]
        await asyncio.to_thread(lambda: [w.get(timeout=10) for w in writes])
        await sink.wait(lambda r: len(r.found) == count + 1)
        assert watcher.conn is not None
        await eventually(lambda: watcher.conn.prefetch._waiting == 0, what="reads given back")
        assert watcher.reads == count + 1  # one read each, never two


async def test_a_child_deleted_and_created_again_under_its_name_is_kept(zk, writer, pool) -> None:
    path = "/hand/again"
    a = register(writer, path, 8600, "a")
    async with watching(zk, pool, path, "127.0.0.1:8600") as (_, sink):
        writes = [writer.delete_async(a), writer.create_async(a, record(8601, "a"))]
        await asyncio.to_thread(lambda: [w.get(timeout=10) for w in writes])
        await sink.wait_hosts(["127.0.0.1:8601"])
        await asyncio.sleep(0.3)
        assert sink.hosts() == ["127.0.0.1:8601"]
