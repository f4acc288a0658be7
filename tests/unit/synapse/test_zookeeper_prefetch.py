"""A created child's read started in kazoo's thread with its event (smartstack.zk_prefetch):
how the watcher takes, replaces and drops such reads (no ZooKeeper: fakes answer)."""

from __future__ import annotations

import asyncio
from collections import namedtuple
from typing import Any

from kazoo.protocol.states import EventType, KeeperState, WatchedEvent

from smartstack.record import Registration, encode
from smartstack.zk_prefetch import MAX_WAITING, Prefetch
from synapse.watchers.zookeeper import ZooKeeperWatcher

from test_zookeeper_watcher_events import _watcher as plain_watcher  # isort: skip

Stat = namedtuple("Stat", "mzxid")


class _Answer:
    """A kazoo async result already answered."""

    def __init__(self, value: Any) -> None:
        self.value = value


class _Client:
    """What Prefetch asks of a KazooClient."""

    chroot = ""

    def __init__(self, queued: bool = True) -> None:
        self.calls: list[Any] = []
        self.queued = queued
        self.handler = self

    def async_result(self) -> _Answer:
        return _Answer(None)

    def _call(self, request: Any, result: Any) -> bool | None:
        self.calls.append(request)
        return None if self.queued else False  # kazoo: False when closed or expired


class _Conn:
    """What the watcher's reads ask of its connection."""

    auth_error = None

    def __init__(self) -> None:
        self.prefetch = Prefetch(_Client())
        self.asked: list[list[str]] = []

    async def wait_all(self, results: list[_Answer]) -> list[Any]:
        return [r.value for r in results]

    async def get_many(self, paths: list[str], watch: Any) -> list[Any]:
        self.asked.append(list(paths))
        return [_record(p.rsplit("/", 1)[1]) for p in paths]


def _record(name: str) -> tuple[bytes, Stat]:
    port = 9000 + int(name.rsplit("_", 1)[1])
    return encode(Registration(host="127.0.0.1", port=port, name=name[0])), Stat(5)


def _watcher(loop: asyncio.AbstractEventLoop) -> tuple[ZooKeeperWatcher, Any, _Conn]:
    watcher, sink = plain_watcher(loop)  # two known children, a and b
    conn = _Conn()
    watcher.conn = conn  # type: ignore[assignment]
    watcher._armed, watcher._relist, watcher._gen_dirty = True, False, False
    watcher.reports = 1  # (past its first report)
    return watcher, sink, conn


def _event(kind: str, name: str) -> WatchedEvent:
    return WatchedEvent(kind, KeeperState.CONNECTED, f"/svc/{name}")


def _answered(name: str) -> _Answer:
    return _Answer(_record(name))


def test_the_read_started_with_the_event_is_taken_and_the_others_read_together(
    own_loop: asyncio.AbstractEventLoop,
) -> None:
    watcher, sink, conn = _watcher(own_loop)
    watcher._on_tree(_event(EventType.CREATED, "c_0000000003"), _answered("c_0000000003"))
    watcher._on_tree(_event(EventType.CREATED, "d_0000000004"), None)  # none started
    own_loop.run_until_complete(watcher._apply_tree(1.0))
    assert conn.asked == [["/svc/d_0000000004"]]  # c's answer came with its event
    ports = sorted(f.registration.port for f in sink.reports[-1].found)
    assert ports == [8001, 8002, 9003, 9004]
    assert watcher.reads == 2 and watcher._prefetched == {}
    assert conn.prefetch._waiting == 0


def test_a_later_event_replaces_the_older_read_and_a_removal_drops_it(
    own_loop: asyncio.AbstractEventLoop,
) -> None:
    watcher, _, conn = _watcher(own_loop)
    first = conn.prefetch.start("/svc/c_0000000003")
    watcher._on_tree(_event(EventType.CREATED, "c_0000000003"), first)
    second = conn.prefetch.start("/svc/c_0000000003")
    watcher._on_tree(_event(EventType.CHANGED, "c_0000000003"), second)
    assert watcher._prefetched == {"c_0000000003": second}
    assert conn.prefetch._waiting == 1  # the first one's place was given back
    watcher._on_tree(_event(EventType.DELETED, "c_0000000003"), None)
    assert watcher._prefetched == {} and conn.prefetch._waiting == 0


def test_a_read_the_sync_does_not_need_is_dropped_and_a_connection_change_drops_all(
    own_loop: asyncio.AbstractEventLoop,
) -> None:
    watcher, _, conn = _watcher(own_loop)
    # b is known already (a listing brought it): its started read is not waited for.
    watcher._on_tree(
        _event(EventType.CREATED, "b_0000000002"), conn.prefetch.start("/svc/b_0000000002")
    )
    own_loop.run_until_complete(watcher._apply_tree(1.0))
    assert watcher._prefetched == {} and conn.prefetch._waiting == 0
    watcher._on_tree(
        _event(EventType.CREATED, "e_0000000005"), conn.prefetch.start("/svc/e_0000000005")
    )
    watcher._on_state("suspended")
    assert watcher._prefetched == {} and conn.prefetch._waiting == 0


def test_at_most_max_waiting_reads_are_started_and_none_on_a_closed_session() -> None:
    prefetch = Prefetch(_Client())
    started = [prefetch.start(f"/svc/c_{i:010d}") for i in range(MAX_WAITING + 3)]
    assert sum(r is not None for r in started) == MAX_WAITING
    prefetch.release(2)
    assert prefetch.start("/svc/x_0000000001") is not None
    closed = Prefetch(_Client(queued=False))
    assert closed.start("/svc/c_0000000001") is None and closed._waiting == 0


def test_an_event_queued_before_close_gives_its_read_back(
    own_loop: asyncio.AbstractEventLoop,
) -> None:
    """kazoo's thread may queue an event (with its started read) just before close(): the
    read's place on the shared connection is given back, not kept by a closed watcher."""
    watcher, _, conn = _watcher(own_loop)
    conn.loop = own_loop  # type: ignore[attr-defined]
    callback = watcher._tree_callback()
    for i in range(MAX_WAITING):
        callback(_event(EventType.CREATED, f"c_{i:010d}"))  # queued for the loop
    assert conn.prefetch._waiting == MAX_WAITING
    watcher.conn = None  # close() ran before the loop got to them
    own_loop.run_until_complete(asyncio.sleep(0))
    assert conn.prefetch._waiting == 0 and watcher._prefetched == {}
