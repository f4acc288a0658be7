"""The ZooKeeper watcher against a real ZooKeeper, with records written by hand."""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import traceback
from collections.abc import AsyncIterator

import pytest
from kazoo.client import KazooClient
from kazoo.security import make_digest_acl
from synapse_testlib import Collector, eventually, metrics, sample, service_config

from smartstack.record import Registration, encode, encode_child_prefix
from smartstack.zookeeper import ZooKeeperPool
from synapse.watchers import create_watcher
from synapse.watchers.base import WatcherContext
from synapse.watchers.zookeeper import ZooKeeperWatcher
from synapse.watchers.zookeeper_poll import ZooKeeperPollWatcher
from testbed.zookeeper import ZooKeeperServer, expire_session, four_letter_word


@pytest.fixture
async def pool() -> AsyncIterator[ZooKeeperPool]:
    pool = ZooKeeperPool(asyncio.get_running_loop())
    yield pool
    await pool.close_all()


def record(port: int, name: str = "i", **extra) -> bytes:
    return json.dumps({"host": "127.0.0.1", "port": port, "name": name, **extra}).encode()


def register(writer: KazooClient, path: str, port: int, name: str = "i", **extra) -> str:
    return writer.create(f"{path}/{name}_", record(port, name, **extra), sequence=True,
                         makepath=True)  # fmt: skip


def bad_records(watcher: ZooKeeperWatcher) -> float:
    return sample(watcher.metrics.registry, "synapse_bad_records_total",
                  service=watcher.service, method="zookeeper")  # fmt: skip


def kazoo_state(client: KazooClient, port: int) -> str:
    """kazoo's state, the zxids (a server behind the client's zxid refuses it), and where
    kazoo's connection thread is: for a reconnect that never came."""
    try:
        srvr = four_letter_word(port, "srvr", timeout=2)
        server_zxid = next(x for x in srvr.splitlines() if x.startswith("Zxid"))
    except (OSError, StopIteration) as exc:
        server_zxid = f"srvr failed: {exc!r}"
    frames = sys._current_frames()
    where = [
        "".join(traceback.format_stack(frames[t.ident])[-6:])
        for t in threading.enumerate()
        if "zk_loop" in t.name and t.ident in frames
    ]
    return (f"kazoo state {client.state} / {client.client_state}, last_zxid "
            f"{client.last_zxid:#x}, server {server_zxid}; connection thread:\n"
            f"{''.join(where) or 'none'}")  # fmt: skip


async def start_watcher(
    zk, pool, path: str, session_timeout: float = 10.0, **discovery
) -> tuple[ZooKeeperWatcher, Collector]:
    sink = Collector()
    cfg = service_config({"method": "zookeeper", "hosts": [zk.hosts], "path": path, **discovery})
    ctx = WatcherContext(loop=asyncio.get_running_loop(), metrics=metrics(), zk_pool=pool,
                         zk_session_timeout=session_timeout)  # fmt: skip
    watcher = ZooKeeperWatcher(path.strip("/").replace("/", "_"), cfg, sink, ctx)
    await watcher.start()
    return watcher, sink


async def watching_children(
    zk, writer: KazooClient, pool, path: str, port: int, count: int, prefix: str
) -> tuple[ZooKeeperWatcher, Collector]:
    """``count`` children at ``path`` (ports from ``port``, names ``<prefix>0``...), then a
    watcher of it, once it lists them all."""
    for i in range(count):
        register(writer, path, port + i, f"{prefix}{i}")
    watcher, sink = await start_watcher(zk, pool, path)
    try:
        await sink.wait(lambda r: len(r.found) == count)
    except BaseException:
        await watcher.stop()
        raise
    return watcher, sink


async def test_children_become_servers_and_leave(zk, writer, pool) -> None:
    path = "/syn/basic"
    a = register(writer, path, 8001, "a")
    watcher, sink = await start_watcher(zk, pool, path)
    try:
        await sink.wait_hosts(["127.0.0.1:8001"])
        b = register(writer, path, 8002, "b")
        await sink.wait_hosts(["127.0.0.1:8001", "127.0.0.1:8002"])
        writer.delete(a)
        report = await sink.wait_hosts(["127.0.0.1:8002"])
        assert report.found[0].origin == f"zookeeper:{b}"
        assert watcher.status()["connected"] is True
    finally:
        await watcher.stop()


async def test_path_that_does_not_exist_yet(zk, writer, pool) -> None:
    path = "/syn/later/service"
    watcher, sink = await start_watcher(zk, pool, path)
    try:
        await sink.wait(lambda r: r.found == ())
        assert watcher.path_exists is False
        register(writer, path, 8003)  # creates the path and the child
        await sink.wait_hosts(["127.0.0.1:8003"])
        # The whole path removed again: no servers from it, and it is watched for re-creation.
        writer.delete("/syn/later", recursive=True)
        await sink.wait(lambda r: r.found == ())
        register(writer, path, 8004)
        await sink.wait_hosts(["127.0.0.1:8004"])
    finally:
        await watcher.stop()


async def test_one_read_per_new_child_and_none_for_path_encoding(zk, writer, pool) -> None:
    path = "/syn/reads"
    watcher, sink = await watching_children(zk, writer, pool, path, 9000, 20, "n")
    try:
        assert watcher.reads == 20
        # One more child: exactly one more read, not 21.
        register(writer, path, 9100, "new")
        await sink.wait(lambda r: len(r.found) == 21)
        assert watcher.reads == 21
        # A removal needs no read at all.
        writer.delete(f"{path}/{sorted(writer.get_children(path))[0]}")
        await sink.wait(lambda r: len(r.found) == 20)
        assert watcher.reads == 21
        # use_path_encoding: the record is in the name, no read.
        reg = Registration(host="127.0.0.1", port=9200, name="enc")
        prefix = encode_child_prefix(reg)
        assert prefix is not None
        writer.create(f"{path}/{prefix}", encode(reg), sequence=True)
        await sink.wait(lambda r: len(r.found) == 21)
        assert watcher.reads == 21
        reads = sample(watcher.metrics.registry, "synapse_registry_reads_total",
                       service=watcher.service, method="zookeeper")  # fmt: skip
        assert reads == 21
    finally:
        await watcher.stop()


async def test_data_changed_in_place_is_read_once_more(zk, writer, pool) -> None:
    path = "/syn/inplace"
    child = register(writer, path, 8010, "x")
    watcher, sink = await start_watcher(zk, pool, path)
    try:
        await sink.wait_hosts(["127.0.0.1:8010"])
        reads = watcher.reads
        writer.set(child, record(8011, "x"))
        await sink.wait_hosts(["127.0.0.1:8011"])
        assert watcher.reads == reads + 1
    finally:
        await watcher.stop()


async def test_hostile_records_are_skipped_and_counted(zk, writer, pool) -> None:
    path = "/syn/hostile"
    register(writer, path, 8020, "good")
    writer.create(f"{path}/bad_", b"{not json", sequence=True)
    writer.create(f"{path}/bad_", record(8021, host="127.0.0.1\n  server evil 10.0.0.1:80"),
                  sequence=True)  # fmt: skip
    writer.create(f"{path}/bad_", record(70000, "port"), sequence=True)
    writer.create(f"{path}/bad_", b'{"host": "127.0.0.1", "port": 1, "pad": "' + b"x" * 100_000
                  + b'"}', sequence=True)  # fmt: skip
    writer.create(f"{path}/base64_12_bm90IGpzb24h_", b"", sequence=True)  # encoded garbage
    watcher, sink = await start_watcher(zk, pool, path)
    try:
        report = await sink.wait(lambda r: r.skipped == 5)
        assert sink.hosts() == ["127.0.0.1:8020"]
        assert report.found[0].registration.name == "good"
        assert bad_records(watcher) == 5
        # A later valid child still comes through; the bad ones are not logged again.
        register(writer, path, 8022, "good2")
        await sink.wait_hosts(["127.0.0.1:8020", "127.0.0.1:8022"])
        assert bad_records(watcher) == 5
    finally:
        await watcher.stop()


async def test_unreadable_child_is_skipped_not_fatal(zk, writer, pool) -> None:
    """A child whose ACL refuses us must not block every other child of the service."""
    path = "/syn/acl"
    register(writer, path, 8035, "open")
    secret = [make_digest_acl("owner", "pw", all=True)]
    writer.create(f"{path}/locked_", record(8036, "locked"), acl=secret, sequence=True)
    watcher, sink = await start_watcher(zk, pool, path)
    try:
        await sink.wait(lambda r: r.skipped == 1 and len(r.found) == 1)
        register(writer, path, 8037, "later")
        await sink.wait_hosts(["127.0.0.1:8035", "127.0.0.1:8037"])
        assert bad_records(watcher) == 1
    finally:
        await watcher.stop()


async def test_child_gone_before_its_read_is_no_error(zk, writer, pool) -> None:
    path = "/syn/race"
    register(writer, path, 8030, "stays")
    watcher, sink = await start_watcher(zk, pool, path)
    try:
        await sink.wait_hosts(["127.0.0.1:8030"])
        # The NoNode race (#205): the child listed a moment ago is gone when it is read.
        await watcher._read("vanished_0000000001")
        assert "vanished_0000000001" not in watcher._children
        assert watcher.status()["error"] is None
    finally:
        await watcher.stop()


async def test_serverset_members_and_label_free_fallback_names(zk, writer, pool) -> None:
    path = "/syn/serverset"
    member = {"serviceEndpoint": {"host": "127.0.0.1", "port": 8040},
              "additionalEndpoints": {"http": {"host": "127.0.0.1", "port": 8041}},
              "status": "ALIVE", "shard": 3}  # fmt: skip
    writer.create(f"{path}/member_", json.dumps(member).encode(), sequence=True, makepath=True)
    dead = {**member, "status": "DEAD"}
    writer.create(f"{path}/member_", json.dumps(dead).encode(), sequence=True)
    watcher, sink = await start_watcher(
        zk, pool, path, decode={"method": "serverset", "endpoint_name": "http"}
    )
    try:
        report = await sink.wait_hosts(["127.0.0.1:8041"])
        assert report.found[0].registration.name == "3"
        assert report.skipped == 1
    finally:
        await watcher.stop()


async def test_session_expiry_keeps_the_list_and_watches_come_back(zk, writer, pool) -> None:
    path = "/syn/expiry"
    watcher, sink = await watching_children(zk, writer, pool, path, 8050, 5, "e")
    try:
        assert watcher.reads == 5
        conn = watcher.conn
        assert conn is not None
        session = conn.session_id
        reports = len(sink.reports)
        await asyncio.to_thread(expire_session, conn.client)
        await eventually(lambda: conn.connected and conn.session_id != session, what="new session")
        # Nothing was lost meanwhile: no empty report.
        assert all(len(r.found) == 5 for r in sink.reports[reports:])
        # The children watch is back on the new session...
        register(writer, path, 8060, "after")
        await sink.wait(lambda r: len(r.found) == 6)
        # ...the cached children were checked in one multi-read (5) and the new one read.
        assert watcher.reads == 11
        # Data watches are back too: an in-place change after the expiry is seen.
        old_child = next(c for c in writer.get_children(path) if c.startswith("e0_"))
        writer.set(f"{path}/{old_child}", record(8070, "moved"))
        await sink.wait(lambda r: "127.0.0.1:8070" in sink.hosts())
        assert watcher.reads == 12
    finally:
        await watcher.stop()


async def test_zookeeper_poll_lists_without_watches(zk, writer, pool) -> None:
    path = "/syn/poll"
    register(writer, path, 8080, "p1")
    sink = Collector()
    cfg = service_config({"method": "zookeeper_poll", "hosts": [zk.hosts], "path": path,
                          "polling_interval_sec": 0.2})  # fmt: skip
    ctx = WatcherContext(loop=asyncio.get_running_loop(), metrics=metrics(), zk_pool=pool)
    watcher = create_watcher("poll", cfg, sink, ctx)
    assert isinstance(watcher, ZooKeeperPollWatcher)
    await watcher.start()
    try:
        await sink.wait_hosts(["127.0.0.1:8080"])
        register(writer, path, 8081, "p2")
        await sink.wait_hosts(["127.0.0.1:8080", "127.0.0.1:8081"])
        assert watcher.reads == 2
    finally:
        await watcher.stop()


async def test_connection_loss_rearms_watches_with_one_batched_read(tmp_path, pool) -> None:
    # A long session, so that it surely outlives the restart: this is about the connection.
    server = ZooKeeperServer(workdir=tmp_path / "zk", extra_config=["maxSessionTimeout=60000"])
    server.start()
    path = "/syn/reconnect"
    own = KazooClient(hosts=server.hosts)
    own.start(timeout=30)
    for i in range(3):
        register(own, path, 8090 + i, f"r{i}")
    own.stop()
    own.close()
    watcher, sink = await start_watcher(server, pool, path, session_timeout=60.0)
    try:
        await sink.wait(lambda r: len(r.found) == 3)
        conn = watcher.conn
        assert conn is not None
        session = conn.session_id
        await asyncio.to_thread(server.stop)  # the connection drops; the session lives on
        await eventually(lambda: not watcher.connected, what="the watcher to see the loss")
        assert len(sink.last.found) == 3, "the last list stays in force"
        await asyncio.to_thread(server.start)
        # A restarted JVM on a busy CI machine can take many seconds to answer: the wait is
        # long, the session (60 s) longer, so this still proves the session survived.
        try:
            await eventually(lambda: watcher.connected, timeout=45.0, what="reconnect")
        except AssertionError as exc:  # (rare, at load 5+: say where kazoo's thread was)
            raise AssertionError(f"{exc}; {kazoo_state(conn.client, server.port)}") from None
        assert conn.session_id == session
        # The cached children were checked with one multi-read (their data and stat, 3
        # reads in 1 request), and their watches work again.
        await eventually(lambda: watcher.reads == 6, what="the check of the cached children")
        own = KazooClient(hosts=server.hosts)
        await asyncio.to_thread(own.start, 30)
        try:
            child = next(c for c in own.get_children(path) if c.startswith("r1_"))
            own.set(f"{path}/{child}", record(8099, "r1"))
            await sink.wait(lambda r: "127.0.0.1:8099" in (sink.hosts() or []))
            assert watcher.reads == 7
        finally:
            own.stop()
            own.close()
    finally:
        await watcher.stop()
        server.stop()
