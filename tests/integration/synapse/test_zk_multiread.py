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

    def counted(client, paths, kinds=None, outgrown=None):
        sent.append(list(paths))
        return real(client, paths, kinds, outgrown)

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

    def counted(client, paths, kinds=None, outgrown=None):
        sent.append((list(paths), None if kinds is None else list(kinds)))
        return real(client, paths, kinds, outgrown)

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
