"""smartstack.kazoo_conn against a real ZooKeeper: many queued requests go in few writes,
many replies are handled per read, in order, and a dropped connection fails what was in
flight without corrupting the next connection's stream."""

from __future__ import annotations

import asyncio
import sys
from collections import deque
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import ConnectionLoss
from kazoo.protocol.connection import _CONNECTION_DROP
from kazoo.protocol.serialization import GetData

from smartstack import kazoo_conn
from smartstack.kazoo_inline import inline
from smartstack.logs import _FIELDS
from smartstack.zookeeper import ZooKeeperConnection

BIG = 150 * 1024  # a reply over two of kazoo_conn's read chunks: it arrives in parts


def _data(i: int) -> bytes:
    return b"x" * BIG if i % 97 == 0 else f"node {i}".encode()


def _nodes(writer: KazooClient, count: int) -> list[str]:
    paths = [f"/kc/n{i}" for i in range(count)]
    if not writer.exists(paths[-1]):
        for i, path in enumerate(paths):
            writer.create(path, _data(i), makepath=True)
    return paths


def _queue_gets(conn: ZooKeeperConnection, paths: list[str], order: list[int]) -> list[Any]:
    """One get per path, all queued before kazoo's thread is woken (as WakeBatcher does);
    ``order`` receives each index as its reply is handled."""
    client = conn.client
    results = []
    for i, path in enumerate(paths):
        result = client.handler.async_result()
        result.rawlink(inline(lambda _r, i=i: order.append(i)))
        client._queue.append((GetData(path, None), result))
        results.append(result)
    client._connection._write_sock.sendall(b"\0" * len(paths))
    return results


class _CountingSocket:
    """kazoo's ZooKeeper socket, counting its send and recv calls."""

    def __init__(self, sock: Any) -> None:
        self.sock, self.sends, self.recvs = sock, 0, 0

    def send(self, data: Any) -> int:
        self.sends += 1
        return self.sock.send(data)  # type: ignore[no-any-return]

    def recv(self, size: int) -> bytes:
        self.recvs += 1
        return self.sock.recv(size)  # type: ignore[no-any-return]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)


async def test_queued_requests_share_writes_and_replies_come_in_order(zk, writer, conn) -> None:
    assert isinstance(conn.client._connection, kazoo_conn.BulkConnection)
    paths = _nodes(writer, 600)
    connection = conn.client._connection
    sock = connection._socket = _CountingSocket(connection._socket)
    order: list[int] = []
    results = _queue_gets(conn, paths, order)
    try:
        replies = await asyncio.to_thread(lambda: [r.get(timeout=30) for r in results])
    finally:
        connection._socket = sock.sock
    assert [data for data, _stat in replies] == [_data(i) for i in range(600)]
    assert order == list(range(600))  # handled in the order they were queued
    # kazoo alone: a send per request, two receives per reply (header, body). Here: a
    # send per batch of 256 (a full socket buffer or a ping may add a few), and a receive
    # takes what has come (one reply each at worst, a slow server's trickle).
    assert sock.sends < 60, sock.sends
    assert 0 < sock.recvs < 650, sock.recvs
    assert not conn.client._queue and not conn.client._pending


async def test_a_dropped_connection_fails_what_was_in_flight_then_reads_cleanly(
    zk, writer, conn
) -> None:
    paths = _nodes(writer, 600)
    session = conn.client.client_id
    before: list[int] = []
    first = _queue_gets(conn, paths[:300], before)
    dropped = conn.client.handler.async_result()
    conn.client._queue.append((_CONNECTION_DROP, dropped))  # kazoo's own test sentinel
    conn.client._connection._write_sock.send(b"\0")
    after = _queue_gets(conn, paths[300:], [])

    def outcome(result: Any) -> Any:
        try:
            return result.get(timeout=30)
        except ConnectionLoss as exc:
            return exc

    done = await asyncio.to_thread(lambda: [outcome(r) for r in first + after])
    answered = [i for i, r in enumerate(done) if not isinstance(r, ConnectionLoss)]
    # Sent before the drop: answered or lost, never mixed up. Queued after it: lost, unless
    # the connection was back before they were queued (a loaded machine: seen in CI, the
    # last 32 of 300 answered), so a lost prefix then an answered suffix, never mixed.
    assert all(done[i][0] == _data(i) for i in answered)
    assert any(isinstance(r, ConnectionLoss) for r in done)  # the drop did happen
    later = [isinstance(r, ConnectionLoss) for r in done[300:]]
    assert later == sorted(later, reverse=True), later  # (True = lost, before any answer)
    assert before == sorted(before)
    for _ in range(300):  # the same session comes back
        if conn.client.connected:
            break
        await asyncio.sleep(0.1)
    assert conn.client.client_id == session

    order: list[int] = []
    results = _queue_gets(conn, paths, order)
    replies = await asyncio.to_thread(lambda: [r.get(timeout=30) for r in results])
    assert [data for data, _stat in replies] == [_data(i) for i in range(600)]
    assert order == list(range(600))


class _NoIteration(deque):  # type: ignore[type-arg]
    """kazoo's request queue that refuses to be iterated: another thread may append at
    any time, and a deque iterator then raises (only indexing from the left is safe)."""

    def __iter__(self) -> Any:
        raise AssertionError("kazoo's request queue iterated while other threads append")


async def test_requests_queued_by_other_threads_while_a_batch_is_sent(zk, writer, conn) -> None:
    """Other threads append to kazoo's queue while its thread builds a batch (the loop's
    watchers, kazoo's own callbacks). A batch taken by iterating the queue died with
    "deque mutated during iteration" (the connection thread's error, in a loaded fleet
    run). The race is rare, so the queue here refuses iteration outright; the threads
    and a GIL switching every microsecond check the rest under contention."""
    paths = _nodes(writer, 600)
    client = conn.client
    client._queue = _NoIteration(client._queue)  # the race made certain: never iterated
    threads, per_thread = 4, 1500
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)

    def submit(k: int) -> list[Any]:
        return [client.get_async(paths[(k * per_thread + i) % 600]) for i in range(per_thread)]

    try:
        batches = await asyncio.gather(*(asyncio.to_thread(submit, k) for k in range(threads)))
        replies = await asyncio.to_thread(
            lambda: [r.get(timeout=60) for batch in batches for r in batch]
        )
    finally:
        sys.setswitchinterval(previous)
    expected = [
        _data((k * per_thread + i) % 600) for k in range(threads) for i in range(per_thread)
    ]
    assert [data for data, _stat in replies] == expected
    assert client.connected and not client._queue and not client._pending


async def test_a_server_closing_every_handshake_is_named(tmp_path, caplog, monkeypatch) -> None:
    """Over the server's maxClientCnxns (per client IP) it accepts the connection and closes
    it: kazoo said only "socket connection broken", once, and retried (review s36)."""
    from testbed.process import wait_until
    from testbed.zookeeper import ZooKeeperServer

    # The streak named after 2 s, not 10 (its length is the leader-election test's concern,
    # below): the same path, 8 s less of make test.
    monkeypatch.setattr(kazoo_conn, "HANDSHAKE_CLOSED_FOR", 2.0)
    server = ZooKeeperServer(workdir=tmp_path / "zk", extra_config=["maxClientCnxns=1"]).start()
    holder = KazooClient(hosts=server.hosts)  # the one connection 127.0.0.1 may have
    holder.start(timeout=30)
    conn = ZooKeeperConnection([server.hosts], asyncio.get_running_loop())
    try:
        conn.start()
        await asyncio.to_thread(
            wait_until, lambda: "zk_handshake_closed" in caplog.messages, 30, 0.1, "the event"
        )
        assert not conn.client.connected
        said = next(r for r in caplog.records if r.getMessage() == "zk_handshake_closed")
        fields = getattr(said, _FIELDS)  # the streak's bound held (patched down to 2 s)
        assert fields["attempts"] >= kazoo_conn.HANDSHAKE_CLOSED_SAY and fields["for_s"] >= 2
        holder.stop()  # a slot is free: it connects, as before
        await conn.wait_connected(30)
    finally:
        holder.stop()
        holder.close()
        await conn.close()
        server.stop()


async def test_a_leader_election_is_not_named_a_refusing_server(zk_ensemble, caplog) -> None:
    """Every member closes the clients' handshakes while a new leader is elected: 3 in a row
    came within 0.1-0.2 s, and every client warned zk_handshake_closed (maxClientCnxns
    first) at each leader change (review s36 cr-looks: 6 of 6 clients, 3 changes)."""
    loop = asyncio.get_running_loop()
    conns = [ZooKeeperConnection([zk_ensemble.hosts], loop) for _ in range(3)]
    try:
        for conn in conns:
            conn.start()
        for conn in conns:
            await conn.wait_connected(30)
        leader = zk_ensemble.leader_index()
        assert leader is not None
        await asyncio.to_thread(zk_ensemble.kill_member, leader)
        await asyncio.sleep(1)  # (the election: the clients' handshakes closed meanwhile)
        for conn in conns:
            await conn.wait_connected(30)
        assert "zk_handshake_closed" not in caplog.messages
    finally:
        for conn in conns:
            await conn.close()
