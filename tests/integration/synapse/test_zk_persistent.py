"""Persistent recursive watches (smartstack.zk_persistent) and the ZooKeeper watcher's use of
them, against real ZooKeeper servers (a standalone one and a 3-member ensemble)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import ConnectionLoss, NodeExistsError, NoNodeError, SessionExpiredError
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.protocol.states import EventType, WatchedEvent
from kazoo.retry import KazooRetry
from synapse_testlib import eventually

from smartstack import zk_persistent
from smartstack.kazoo_inline import inline
from smartstack.record import Registration, encode, encode_child_prefix
from smartstack.zookeeper import ZooKeeperConnection, ZooKeeperPool
from testbed.zookeeper import ZooKeeperEnsemble, expire_session

# The watcher's own tests' helpers (same directory: importable by module name).
from test_synapse_zookeeper_watcher import (  # isort: skip
    record,
    register,
    start_watcher,
    watching_children,
)


@pytest.fixture
async def pool() -> AsyncIterator[ZooKeeperPool]:
    pool = ZooKeeperPool(asyncio.get_running_loop())
    yield pool
    await pool.close_all()


def _recorder(into: list[tuple[str, str]]) -> Any:
    @inline  # in kazoo's thread, like the watchers' wrappers
    def record_event(event: WatchedEvent) -> None:
        into.append((event.type, event.path))

    return record_event


async def _round_trip(conn: ZooKeeperConnection) -> None:
    """A reply on our connection after another client's acknowledged write: any event that
    write caused for us came before it (ZooKeeper orders a connection's events and replies)."""
    await conn.call("exists", "/")


async def test_one_watch_hears_the_whole_subtree_until_removed(zk, writer, conn) -> None:
    writer.ensure_path("/pw/a")
    heard: list[tuple[str, str]] = []
    one_shot: list[tuple[str, str]] = []
    assert await conn.watch_tree("/pw/a", _recorder(heard)) is True
    assert conn.persistent_watches is True
    writer.create("/pw/a/x", b"1")
    await conn.call("get", "/pw/a/x", watch=_recorder(one_shot))  # kazoo's own, beside it
    writer.set("/pw/a/x", b"2")
    writer.set("/pw/a/x", b"3")  # the persistent watch stays: heard again
    writer.create("/pw/a/x/deeper", b"")
    writer.delete("/pw/a/x/deeper")
    writer.delete("/pw/a/x")
    writer.create("/pw/other", b"")  # outside: not heard
    await _round_trip(conn)
    assert heard == [
        (EventType.CREATED, "/pw/a/x"),
        (EventType.CHANGED, "/pw/a/x"),
        (EventType.CHANGED, "/pw/a/x"),
        (EventType.CREATED, "/pw/a/x/deeper"),
        (EventType.DELETED, "/pw/a/x/deeper"),
        (EventType.DELETED, "/pw/a/x"),
    ]
    assert one_shot == [(EventType.CHANGED, "/pw/a/x")]  # one-shot: once
    conn.unwatch_tree("/pw/a", next(iter(conn._tree._routes["/pw/a"])))
    writer.create("/pw/a/y", b"")
    await _round_trip(conn)
    assert len(heard) == 6 and not conn._tree.routed("/pw/a")


async def test_a_refused_add_watch_is_reported_and_remembered(zk, conn, monkeypatch) -> None:
    """A server before 3.6 answers the unknown opcode with UNIMPLEMENTED: this real server
    answers an opcode it does not know in the same way."""
    monkeypatch.setattr(zk_persistent.AddWatch, "type", 9999)
    heard: list[tuple[str, str]] = []
    session = conn.session_id
    assert await conn.watch_tree("/pw/refused", _recorder(heard)) is False
    assert conn.persistent_watches is False and not conn._tree.routed("/pw/refused")
    # The server closes the connection after such an answer; the session lives on.
    await eventually(lambda: conn.connected and conn.announced, what="reconnect")
    assert conn.session_id == session
    assert await conn.watch_tree("/pw/refused", _recorder(heard)) is False  # not asked again
    assert conn.connected


class _Listings:
    """Counts the watcher's children listings (its calls go through conn.call)."""

    def __init__(self, conn: ZooKeeperConnection, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        real = conn.call

        async def call(method: str, *args: Any, **kwargs: Any) -> Any:
            if method == "get_children":
                self.count += 1
            return await real(method, *args, **kwargs)

        monkeypatch.setattr(conn, "call", call)


async def test_changes_cost_one_read_and_no_listing(zk, writer, pool, monkeypatch) -> None:
    path = "/pw/svc"
    register(writer, path, 8101, "a")
    watcher, sink = await start_watcher(zk, pool, path)
    try:
        await sink.wait_hosts(["127.0.0.1:8101"])
        assert watcher._armed and watcher.conn is not None
        assert watcher.status()["persistent_watch"] is True
        listings = _Listings(watcher.conn, monkeypatch)
        b = register(writer, path, 8102, "b")  # added: its one read
        await sink.wait_hosts(["127.0.0.1:8101", "127.0.0.1:8102"])
        assert watcher.reads == 2
        writer.set(b, record(8103, "b"))  # changed in place: read again
        await sink.wait_hosts(["127.0.0.1:8101", "127.0.0.1:8103"])
        assert watcher.reads == 3
        writer.delete(b)  # removed: no read
        await sink.wait_hosts(["127.0.0.1:8101"])
        reg = Registration(host="127.0.0.1", port=8104, name="enc")  # use_path_encoding
        prefix = encode_child_prefix(reg)
        assert prefix is not None
        encoded = writer.create(f"{path}/{prefix}", encode(reg), sequence=True)
        await sink.wait_hosts(["127.0.0.1:8101", "127.0.0.1:8104"])
        writer.create(f"{encoded}/deeper", b"not a record")  # a grandchild: ignored
        writer.set(path, b'{"haproxy": {"server_options": "check"}}')  # the generator settings
        await sink.wait(lambda r: watcher.generator_config != {})
        assert watcher.reads == 3 and listings.count == 0
        assert watcher.generator_config == {"haproxy": {"server_options": "check"}}
    finally:
        await watcher.stop()


async def test_the_path_deleted_and_created_again(zk, writer, pool) -> None:
    path = "/pw/later/svc"
    watcher, sink = await start_watcher(zk, pool, path)
    try:
        await sink.wait(lambda r: not r.found)
        register(writer, path, 8111, "a")  # the path appears with its first child
        await sink.wait_hosts(["127.0.0.1:8111"])
        writer.delete(path, recursive=True)
        await sink.wait(lambda r: not r.found)
        register(writer, path, 8112, "b")
        await sink.wait_hosts(["127.0.0.1:8112"])
        assert watcher._armed
    finally:
        await watcher.stop()


async def test_a_server_refusing_it_keeps_one_shot_watches(zk, writer, pool, monkeypatch) -> None:
    monkeypatch.setattr(zk_persistent.AddWatch, "type", 9999)  # refused like ZooKeeper 3.5
    path = "/pw/fallback"
    a = register(writer, path, 8121, "a")
    watcher, sink = await start_watcher(zk, pool, path)
    try:
        await sink.wait_hosts(["127.0.0.1:8121"])
        assert watcher.conn is not None and watcher.conn.persistent_watches is False
        assert watcher._tree_watch is None and not watcher._armed
        assert watcher.status()["persistent_watch"] is False
        b = register(writer, path, 8122, "b")
        await sink.wait_hosts(["127.0.0.1:8121", "127.0.0.1:8122"])
        writer.set(b, record(8123, "b"))
        await sink.wait_hosts(["127.0.0.1:8121", "127.0.0.1:8123"])
        writer.delete(a)
        await sink.wait_hosts(["127.0.0.1:8123"])
        assert watcher.reads == 3
    finally:
        await watcher.stop()


async def test_a_new_session_adds_the_watch_again(zk, writer, pool) -> None:
    path = "/pw/expiry"
    watcher, sink = await watching_children(zk, writer, pool, path, 8130, 3, "e")
    try:
        conn = watcher.conn
        assert conn is not None
        session = conn.session_id
        await asyncio.to_thread(expire_session, conn.client)
        await eventually(lambda: conn.session_id != session and watcher._armed, what="re-armed")
        register(writer, path, 8140, "after")
        await sink.wait(lambda r: len(r.found) == 4)
        assert watcher.reads == 7  # 3 at the start, the 3 cached ones checked, the new one
    finally:
        await watcher.stop()


def _member_of(conn: ZooKeeperConnection, ensemble: ZooKeeperEnsemble) -> int:
    port = conn.client._connection._socket.getpeername()[1]
    return next(i for i, m in enumerate(ensemble.members) if m.client_port == port)


def _write_through_the_loss(write: Callable[[], Any], done: type[Exception]) -> None:
    """A write while the ensemble loses a member. kazoo fails a request that was in flight
    when its member dropped the connection (the killed member, or a follower that leaves
    to elect a new leader and drops its clients) with ConnectionLoss, done or not; and a
    request queued while the session expires is dropped without an answer. So the write
    waits a bounded time and is sent again; ``done`` on a retry (NoNodeError for a delete,
    NodeExistsError for a create) means an earlier attempt went through."""
    deadline = time.monotonic() + 45.0
    retried = False
    while True:
        try:
            write()
            return
        except done:
            if not retried:
                raise
            return
        except (ConnectionLoss, SessionExpiredError, KazooTimeoutError):
            if time.monotonic() > deadline:
                raise
            retried = True
            time.sleep(0.1)


async def test_losing_the_member_changes_meanwhile_are_caught_up(zk_ensemble, pool) -> None:
    """The member we are connected to dies; while we reconnect to another one, children
    come and go. The watch is added again on the new connection and the listing compared."""
    # Reconnecting without a long backoff: a leader election refuses clients for a while,
    # and kazoo's default backoff (doubling up to an hour) could outlast the session.
    retry = KazooRetry(max_tries=-1, delay=0.1, backoff=2, max_delay=1.0)
    writer = KazooClient(hosts=zk_ensemble.hosts, connection_retry=retry)
    await asyncio.to_thread(writer.start, 30)
    path = "/pw/ensemble"
    try:
        gone = register(writer, path, 8151, "gone")
        register(writer, path, 8152, "stays")
        watcher, sink = await start_watcher(zk_ensemble, pool, path, session_timeout=30.0)
        try:
            await sink.wait(lambda r: len(r.found) == 2)
            conn = watcher.conn
            assert conn is not None and watcher._armed
            session = conn.session_id
            member = _member_of(conn, zk_ensemble)
            # The loss as the connection announces it: the watcher's own flag may be back
            # (reconnected to a live member, re-armed) before a poll would see it go.
            states: list[str] = []
            conn.add_listener(states.append)
            zk_ensemble.kill_member(member)
            await eventually(lambda: "suspended" in states, what="the loss")

            def delete() -> None:
                writer.delete_async(gone).get(timeout=10)

            def create() -> None:  # (named: a retry must not make a second child)
                writer.create_async(f"{path}/new_0000000100", record(8153, "new")).get(timeout=10)

            await asyncio.to_thread(_write_through_the_loss, delete, NoNodeError)
            await asyncio.to_thread(_write_through_the_loss, create, NodeExistsError)
            await sink.wait_hosts(["127.0.0.1:8152", "127.0.0.1:8153"], timeout=45)
            await eventually(lambda: watcher._armed, what="re-armed")
            assert conn.session_id == session and _member_of(conn, zk_ensemble) != member
            register(writer, path, 8154, "later")  # heard by the watch on the new member
            await sink.wait_hosts(["127.0.0.1:8152", "127.0.0.1:8153", "127.0.0.1:8154"])
            # 2 at the start; the check of the cached children after the reconnect ("stays",
            # and "gone" too when the watcher listed before the delete went through); 8153;
            # 8154.
            assert watcher.reads in (5, 6)
        finally:
            await watcher.stop()
    finally:
        writer.stop()
        writer.close()


async def test_under_a_chroot_events_name_the_path_as_the_client_sees_it(zk, writer) -> None:
    writer.ensure_path("/pw-chroot/svc")
    conn = ZooKeeperConnection([f"{zk.hosts}/pw-chroot"], asyncio.get_running_loop())
    conn.start()
    try:
        await conn.wait_connected(30)
        heard: list[tuple[str, str]] = []
        assert await conn.watch_tree("/svc", _recorder(heard)) is True
        writer.create("/pw-chroot/svc/x", b"")
        writer.create("/pw-chroot/other", b"")  # outside the watched path
        await _round_trip(conn)
        assert heard == [(EventType.CREATED, "/svc/x")]
    finally:
        await conn.close()


async def test_watches_asked_in_one_loop_turn_wake_kazoo_once(zk, writer, conn) -> None:
    """smartstack.kazoo_bulk: a start's addWatch requests share one wake-up write; every
    one is answered, and a plain call queued after them is answered after them."""
    writes: list[int] = []
    sock = conn.client._connection._write_sock

    class Counting:  # the socket pair's writing end, counting the bytes of each write
        def sendall(self, data: bytes) -> None:
            writes.append(len(data))
            sock.sendall(data)

        def send(self, data: bytes) -> int:  # kazoo's own _call
            writes.append(len(data))
            return sock.send(data)

    paths = [f"/pw/bulk/s{i}" for i in range(50)]
    for path in paths:
        writer.ensure_path(path)
    heard: list[tuple[str, str]] = []
    conn.client._connection._write_sock = Counting()
    try:
        sent = [conn.send_tree_watch(path, _recorder(heard)) for path in paths]
        after = conn.call("exists", "/pw/bulk")  # kazoo's _call: queued behind them
        assert await after is not None
        assert all(s is not None and s.ready() and s.exception is None for s in sent)
    finally:
        conn.client._connection._write_sock = sock
    assert writes == [1, 50] or writes == [50, 1]  # (the plain call wrote its own byte)
    writer.create("/pw/bulk/s7/x", b"")
    await _round_trip(conn)
    assert heard == [(EventType.CREATED, "/pw/bulk/s7/x")]
