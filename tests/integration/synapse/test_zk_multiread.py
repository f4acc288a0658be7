"""ZooKeeper's multi-read through kazoo (smartstack.zk_multiread) against a real ZooKeeper."""

from __future__ import annotations

import asyncio

import pytest
from kazoo.exceptions import NoNodeError
from kazoo.protocol.states import EventType, WatchedEvent

from smartstack.kazoo_inline import inline


async def test_many_znodes_are_read_in_one_request_with_their_watches(zk, writer, conn) -> None:
    for i in range(3):
        writer.create(f"/mr/a/c{i}", f"data{i}".encode(), makepath=True)
    events: list[WatchedEvent] = []
    heard = asyncio.Event()
    loop = asyncio.get_running_loop()

    @inline
    def watch(event: WatchedEvent) -> None:  # in kazoo's thread, like the watchers' wrappers
        events.append(event)
        loop.call_soon_threadsafe(heard.set)

    paths = ["/mr/a/c0", "/mr/a/gone", "/mr/a/c2", "/mr/a/c1"]
    replies = await conn.get_many(paths, watch)
    assert conn.multi_read is True  # ZooKeeper 3.8 answers multi-reads
    assert [r[0] for r in (replies[0], replies[2], replies[3])] == [b"data0", b"data2", b"data1"]
    assert isinstance(replies[1], NoNodeError)  # one missing znode fails only its own read
    assert replies[3][1].mzxid > 0
    # Each read set a data watch, like a plain get: a change and a deletion are heard.
    writer.set("/mr/a/c2", b"new")
    await asyncio.wait_for(heard.wait(), 10)
    heard.clear()
    writer.delete("/mr/a/c0")
    await asyncio.wait_for(heard.wait(), 10)
    assert [(e.type, e.path) for e in events] == [
        (EventType.CHANGED, "/mr/a/c2"),
        (EventType.DELETED, "/mr/a/c0"),
    ]
    # No watch was filed for the znode that was missing.
    assert "/mr/a/gone" not in conn.client._data_watchers


async def test_without_a_watch_nothing_is_filed(zk, writer, conn) -> None:
    writer.create("/mr/b/x", b"x", makepath=True)
    assert (await conn.get_many(["/mr/b/x"]))[0][0] == b"x"
    assert "/mr/b/x" not in conn.client._data_watchers
    assert await conn.get_many([]) == []


async def test_a_change_between_the_read_and_the_watch_fires_at_once(zk, writer, conn) -> None:
    """What watch_read relies on: setWatches as of the read's zxid fires for a znode changed
    (or deleted) since, instead of silently watching its newer version."""
    from smartstack.zk_multiread import SetWatches

    writer.create("/mr/c/x", b"1", makepath=True)
    writer.create("/mr/c/y", b"1", makepath=True)
    writer.create("/mr/c/z", b"1", makepath=True)
    await conn.get_many(["/mr/c/x", "/mr/c/y", "/mr/c/z"])
    as_of = conn.client.last_zxid
    writer.set("/mr/c/x", b"2")  # after the read, before the watch
    writer.delete("/mr/c/y")
    events: list[WatchedEvent] = []
    loop, heard = asyncio.get_running_loop(), asyncio.Event()

    @inline
    def watch(event: WatchedEvent) -> None:
        events.append(event)
        loop.call_soon_threadsafe(heard.set)

    for path in ("/mr/c/x", "/mr/c/y", "/mr/c/z"):
        conn.client._data_watchers[path].add(watch)
    result = conn.client.handler.async_result()
    conn.client._call(SetWatches(as_of, ["/mr/c/x", "/mr/c/y", "/mr/c/z"]), result)
    await asyncio.wait_for(eventually_two(events, heard), 10)
    assert sorted((e.type, e.path) for e in events) == [
        (EventType.CHANGED, "/mr/c/x"),
        (EventType.DELETED, "/mr/c/y"),
    ]
    writer.set("/mr/c/z", b"2")  # unchanged at the time: watched from then on
    await asyncio.wait_for(eventually_two(events, heard, 3), 10)
    assert (events[-1].type, events[-1].path) == (EventType.CHANGED, "/mr/c/z")


async def eventually_two(events: list, heard: asyncio.Event, count: int = 2) -> None:
    """Until `count` events arrived."""
    while len(events) < count:
        heard.clear()
        await heard.wait()


async def test_reads_of_one_loop_turn_leave_as_one_request(zk, writer, conn, monkeypatch) -> None:
    """A thousand watchers reading at a start: their multi-reads are one request."""
    from smartstack import zk_multiread

    sent: list[list[str]] = []
    real = zk_multiread.start_multi_read

    def counted(client, paths, kinds=None):
        sent.append(list(paths))
        return real(client, paths, kinds)

    monkeypatch.setattr(zk_multiread, "start_multi_read", counted)
    for name in ("p", "q", "r"):
        writer.create(f"/mr/d/{name}", name.encode(), makepath=True)
    heard = asyncio.Event()
    loop = asyncio.get_running_loop()

    @inline
    def watch(event: WatchedEvent) -> None:
        loop.call_soon_threadsafe(heard.set)

    first, second, third = await asyncio.gather(
        conn.get_many(["/mr/d/p"], watch),
        conn.get_many(["/mr/d/q", "/mr/d/none"]),
        conn.get_many(["/mr/d/r"], watch),
    )
    assert sent == [["/mr/d/p", "/mr/d/q", "/mr/d/none", "/mr/d/r"]]
    assert first[0][0] == b"p" and third[0][0] == b"r"
    assert second[0][0] == b"q" and isinstance(second[1], NoNodeError)
    assert "/mr/d/q" not in conn.client._data_watchers  # asked without a watch
    writer.set("/mr/d/r", b"r2")
    await asyncio.wait_for(heard.wait(), 10)


async def test_listings_go_in_the_multi_read_with_the_reads(zk, writer, conn, monkeypatch) -> None:
    """The watchers' first listings at a start (unwatched: a persistent watch hears the
    children) and other reads of the same loop turn leave as one request."""
    from smartstack import zk_multiread

    sent: list[tuple[list[str], list[int] | None]] = []
    real = zk_multiread.start_multi_read

    def counted(client, paths, kinds=None):
        sent.append((list(paths), None if kinds is None else list(kinds)))
        return real(client, paths, kinds)

    monkeypatch.setattr(zk_multiread, "start_multi_read", counted)
    for name in ("a", "b"):
        writer.create(f"/mr/e/s1/{name}", name.encode(), makepath=True)
    writer.create("/mr/e/s2", b"", makepath=True)
    first, empty, data, missing = await asyncio.gather(
        conn.list_unwatched("/mr/e/s1"),
        conn.list_unwatched("/mr/e/s2"),
        conn.get_many(["/mr/e/s1/a"]),
        conn.list_unwatched("/mr/e/none"),
        return_exceptions=True,
    )
    assert sorted(first) == ["a", "b"] and empty == [] and data[0][0] == b"a"
    assert isinstance(missing, NoNodeError)  # as get_children raises it
    assert sent == [(["/mr/e/s1", "/mr/e/s2", "/mr/e/s1/a", "/mr/e/none"], [8, 8, 4, 8])]
    assert "/mr/e/s1" not in conn.client._child_watchers  # no children watch was set


async def test_listings_fall_back_to_get_children_without_multi_read(zk, writer, conn) -> None:
    writer.create("/mr/f/x", b"x", makepath=True)
    conn.multi_read = False  # as after a server before 3.6 refused one
    assert await conn.list_unwatched("/mr/f") == ["x"]
    with pytest.raises(NoNodeError):
        await conn.list_unwatched("/mr/f/none")


def create_nodes(hosts: str, parent: str, paths: list[str]) -> None:
    """``paths`` under ``parent`` created (data b"x") in one burst of async creates."""
    from kazoo.client import KazooClient

    writer = KazooClient(hosts=hosts)
    writer.start(timeout=30)
    try:
        writer.ensure_path(parent)
        for result in [writer.create_async(path, b"x") for path in paths]:
            result.get(timeout=30)
    finally:
        writer.stop()
        writer.close()


async def test_a_multi_read_larger_than_jute_maxbuffer_is_sent_in_pieces(tmp_path, caplog) -> None:
    """The server closes the connection on a request over its jute.maxbuffer: the same
    multi-read sent again after the reconnect dropped it again, for ever (review s36)."""
    from kazoo.exceptions import ConnectionLoss

    from smartstack.zookeeper import ZooKeeperConnection
    from testbed.zookeeper import ZooKeeperServer

    server = ZooKeeperServer(workdir=tmp_path / "zk", jvm_args=["-Djute.maxbuffer=8192"]).start()
    conn = None
    try:
        paths = [f"/big/{'n' * 60}{i:04d}" for i in range(600)]  # ~42 KB in one multi-read
        create_nodes(server.hosts, "/big", paths)
        conn = ZooKeeperConnection([server.hosts], asyncio.get_running_loop())
        conn.start()
        await conn.wait_connected(30)
        drops = 0
        while True:
            try:
                replies = await conn.get_many(paths)
                break
            except ConnectionLoss:
                drops += 1
                assert drops < 5, "the server dropped every multi-read"
                await conn.wait_connected(30)
        assert [reply[0] for reply in replies] == [b"x"] * len(paths)
        # 600 paths (42 KB), then 150 (10 KB), then 37 at most per request; said once each
        assert "zk_multi_read_dropped" in caplog.messages
    finally:
        if conn is not None:
            await conn.close()
        server.stop()


async def test_a_small_multi_read_pending_at_a_restart_leaves_the_request_size(tmp_path) -> None:
    """A drop fails every pending multi-read: a 4-path one caught by a plain restart left
    one path per request for 5 minutes (a relist of 1,000 services x 20 children: 21,000
    requests, 3.3 s, instead of 18 in 0.2 s; review s36 cr-looks)."""
    import os
    import signal

    from kazoo.exceptions import ConnectionLoss

    from smartstack.zookeeper import ZooKeeperConnection
    from testbed.zookeeper import ZooKeeperServer

    server = ZooKeeperServer(workdir=tmp_path / "zk").start()
    conn = None
    try:
        paths = [f"/r/c{i:03d}" for i in range(600)]
        create_nodes(server.hosts, "/r", paths)
        conn = ZooKeeperConnection([server.hosts], asyncio.get_running_loop())
        conn.start()
        await conn.wait_connected(30)
        assert len(await conn.get_many(paths)) == 600  # answered: one request
        assert server.pid is not None
        os.kill(server.pid, signal.SIGSTOP)  # (so the small read is pending at the drop)
        await asyncio.sleep(0.2)  # (every JVM thread stopped)
        pending = asyncio.ensure_future(conn.get_many(paths[:4]))
        await asyncio.sleep(0.3)
        assert not pending.done(), pending
        os.kill(server.pid, signal.SIGKILL)  # (still stopped: it answers nothing more)
        with pytest.raises(ConnectionLoss):
            await asyncio.wait_for(pending, 10)
        assert conn._reads.max_paths == conn._reads.MAX_PATHS  # before: 1
    finally:
        if conn is not None:
            await conn.close()
        server.kill()


async def test_one_drop_shrinks_the_request_size_once(tmp_path) -> None:
    """The server closes at the first request over its jute.maxbuffer: the smaller
    multi-reads sent behind it (and any still queued) fail with it but never reached it.
    Each of them shrank the size again: a loaded CI run went from 2,048 paths per request
    to 1 on one drop, its retries failing with it (CI of round 42)."""
    import os
    import signal

    from kazoo.exceptions import ConnectionLoss

    from smartstack.zookeeper import ZooKeeperConnection
    from testbed.zookeeper import ZooKeeperServer

    server = ZooKeeperServer(workdir=tmp_path / "zk", jvm_args=["-Djute.maxbuffer=8192"]).start()
    conn = None
    try:
        paths = [f"/big/{'n' * 60}{i:04d}" for i in range(600)]  # ~42 KB in one multi-read
        create_nodes(server.hosts, "/big", paths)
        conn = ZooKeeperConnection([server.hosts], asyncio.get_running_loop())
        conn.start()
        await conn.wait_connected(30)
        assert server.pid is not None
        os.kill(server.pid, signal.SIGSTOP)  # (the three reads wait in the socket, sent)
        await asyncio.sleep(0.2)
        reads = []
        for size in (600, 20, 4):  # one request each: one loop turn apart
            reads.append(asyncio.ensure_future(conn.get_many(paths[:size])))
            await asyncio.sleep(0.2)
        os.kill(server.pid, signal.SIGCONT)
        for read in reads:
            with pytest.raises(ConnectionLoss):
                await asyncio.wait_for(read, 10)
        assert conn._reads.max_paths == 150  # before: 1 (600 // 4, then 20 // 4, then 4 // 4)
        drops = 0
        while True:  # 150 paths are still 10 KB: one more drop, then 37 at most
            await conn.wait_connected(30)
            try:
                replies = await conn.get_many(paths)
                break
            except ConnectionLoss:
                drops += 1
                assert drops < 2, "each of the 150-path pieces was put down to its size"
        assert [reply[0] for reply in replies] == [b"x"] * len(paths)
        assert conn._reads.max_paths == 37
    finally:
        if conn is not None:
            await conn.close()
        server.stop()
