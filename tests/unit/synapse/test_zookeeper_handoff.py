"""The tree watch's callback holds a created child's event in kazoo's thread until its read
is answered, then both reach the loop in one crossing (smartstack.zk_handoff): the watcher
keeps the order, the read's place and the event's time (no ZooKeeper: kazoo's own async
results, answered by hand as kazoo's thread would)."""

from __future__ import annotations

import asyncio
import time
from collections import namedtuple
from typing import Any

from kazoo.exceptions import ConnectionLoss, NoNodeError
from kazoo.protocol.states import EventType, KeeperState, WatchedEvent

from smartstack.kazoo_inline import InlineHandler
from smartstack.record import Registration, encode
from smartstack.zk_prefetch import MAX_WAITING, Prefetch
from smartstack.zookeeper import ZooKeeperConnection
from synapse.watchers.zookeeper import ZooKeeperWatcher

from test_zookeeper_watcher_events import _watcher as plain_watcher  # isort: skip

Stat = namedtuple("Stat", "mzxid")


class _Client:
    """What Prefetch asks of a KazooClient; its reads are kazoo's own async results."""

    chroot = ""

    def __init__(self) -> None:
        self.handler = InlineHandler()
        self.handler._running = True  # (no worker threads: inline callbacks only)
        self.sent: dict[str, Any] = {}  # path -> its read, unanswered until answer()

    def _call(self, request: Any, result: Any) -> None:
        self.sent[request.path] = result

    def answer(self, name: str, value: Any = None) -> None:
        """kazoo's thread reads the reply (or fails the request: _notify_pending)."""
        result = self.sent.pop(f"/svc/{name}")
        if isinstance(value, Exception):
            result.set_exception(value)
        else:
            result.set(value if value is not None else _record(name))


class _Conn:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.client = _Client()
        self.prefetch = Prefetch(self.client)  # type: ignore[arg-type]
        self.asked: list[list[str]] = []
        self.gone: set[str] = set()  # deleted on the server: a read answers NoNode

    async def wait_all(self, results: list[Any]) -> list[Any]:
        return await ZooKeeperConnection.wait_all(self, results)  # type: ignore[arg-type]

    async def get_many(self, paths: list[str], watch: Any) -> list[Any]:
        self.asked.append(list(paths))
        names = [p.rsplit("/", 1)[1] for p in paths]
        return [NoNodeError() if n in self.gone else _record(n) for n in names]


def _record(name: str) -> tuple[bytes, Stat]:
    port = 9000 + int(name.rsplit("_", 1)[1])
    return encode(Registration(host="127.0.0.1", port=port, name=name[0])), Stat(5)


def _event(kind: str, name: str) -> WatchedEvent:
    return WatchedEvent(kind, KeeperState.CONNECTED, f"/svc/{name}")


def _setup(loop: asyncio.AbstractEventLoop) -> tuple[ZooKeeperWatcher, Any, _Conn, Any]:
    watcher, sink = plain_watcher(loop)  # two known children, a and b
    conn = _Conn(loop)
    watcher.conn = conn  # type: ignore[assignment]
    watcher._armed, watcher._relist, watcher._gen_dirty = True, False, False
    watcher.reports = 1
    return watcher, sink, conn, watcher._tree_callback()


def _turn(loop: asyncio.AbstractEventLoop) -> None:
    loop.run_until_complete(asyncio.sleep(0))


def _ports(sink: Any) -> list[int]:
    return sorted(f.registration.port for f in sink.reports[-1].found)


def test_the_event_reaches_the_loop_only_with_its_answered_read() -> None:
    loop = asyncio.new_event_loop()
    try:
        watcher, sink, conn, callback = _setup(loop)
        callback(_event(EventType.CREATED, "c_0000000003"))
        _turn(loop)
        assert watcher._created == set() and watcher._event_time is None  # held
        conn.client.answer("c_0000000003")
        _turn(loop)
        assert watcher._created == {"c_0000000003"}
        assert watcher._prefetched["c_0000000003"].ready()
        loop.run_until_complete(watcher._apply_tree(1.0))
        assert conn.asked == [] and _ports(sink) == [8001, 8002, 9003]
        assert conn.prefetch._waiting == 0 and watcher._handoff is not None
        assert watcher._handoff.crossings == 1
    finally:
        loop.close()


def test_a_removal_does_not_overtake_the_creation_waiting_for_its_read() -> None:
    """Created then deleted at once: the loop must see both, in that order, and end
    without the child (the other way round it would keep a server that is gone)."""
    loop = asyncio.new_event_loop()
    try:
        watcher, _, conn, callback = _setup(loop)
        callback(_event(EventType.CREATED, "c_0000000003"))
        callback(_event(EventType.DELETED, "c_0000000003"))
        conn.gone.add("c_0000000003")
        callback(_event(EventType.DELETED, "a_0000000001"))  # another child's: waits too
        _turn(loop)
        assert watcher._deleted == set() and watcher._created == set()
        conn.client.answer("c_0000000003")  # its data: read before the deletion
        _turn(loop)
        assert watcher._handoff is not None and watcher._handoff.crossings == 1  # together
        assert watcher._deleted == {"c_0000000003", "a_0000000001"}
        assert watcher._prefetched == {} and conn.prefetch._waiting == 0  # dropped: deleted
        loop.run_until_complete(watcher._apply_tree(1.0))
        assert conn.asked == [["/svc/c_0000000003"]]  # read again: the deletion came after
        assert "c_0000000003" not in watcher._children
        assert "a_0000000001" not in watcher._children
    finally:
        loop.close()


def test_the_event_time_is_when_kazoo_read_the_event() -> None:
    loop = asyncio.new_event_loop()
    try:
        watcher, _, conn, callback = _setup(loop)
        before = time.monotonic()
        callback(_event(EventType.CREATED, "c_0000000003"))
        after = time.monotonic()
        time.sleep(0.01)  # the read's round trip
        conn.client.answer("c_0000000003")
        _turn(loop)
        assert watcher._event_time is not None and before <= watcher._event_time <= after
    finally:
        loop.close()


def test_events_past_max_waiting_reads_wait_their_turn_and_are_read_together() -> None:
    loop = asyncio.new_event_loop()
    try:
        watcher, sink, conn, callback = _setup(loop)
        names = [f"c_{i:010d}" for i in range(3, 3 + MAX_WAITING + 2)]
        for name in names:
            callback(_event(EventType.CREATED, name))
        assert len(conn.client.sent) == MAX_WAITING  # the last two: no read started
        _turn(loop)
        assert watcher._created == set()  # all behind the first one's read
        for name in names[:MAX_WAITING]:
            conn.client.answer(name)
        _turn(loop)
        assert watcher._created == set(names)
        loop.run_until_complete(watcher._apply_tree(1.0))
        assert conn.asked == [[f"/svc/{n}" for n in names[MAX_WAITING:]]]
        assert len(sink.reports[-1].found) == 2 + len(names)
        assert conn.prefetch._waiting == 0 and watcher._prefetched == {}
    finally:
        loop.close()


def test_a_connection_loss_releases_the_held_events_and_their_reads_places() -> None:
    loop = asyncio.new_event_loop()
    try:
        watcher, _, conn, callback = _setup(loop)
        callback(_event(EventType.CREATED, "c_0000000003"))
        callback(_event(EventType.CHANGED, "a_0000000001"))
        for name in list(conn.client.sent):  # _notify_pending, in kazoo's thread
            conn.client.answer(name.rsplit("/", 1)[1], ConnectionLoss())
        _turn(loop)
        assert watcher._created == {"c_0000000003"} and watcher._handoff is not None
        assert watcher._handoff.held == 0
        watcher._on_state("suspended")  # (kazoo: right after _notify_pending)
        assert watcher._prefetched == {} and conn.prefetch._waiting == 0
    finally:
        loop.close()


def test_a_failed_read_taken_by_a_sync_fails_the_sync_as_before() -> None:
    loop = asyncio.new_event_loop()
    try:
        watcher, _, conn, callback = _setup(loop)
        callback(_event(EventType.CREATED, "c_0000000003"))
        conn.client.answer("c_0000000003", ConnectionLoss())
        _turn(loop)
        try:
            loop.run_until_complete(watcher._apply_tree(1.0))
        except ConnectionLoss:
            pass
        else:
            raise AssertionError("a lost read must fail the sync (run() retries)")
        assert watcher._relist and conn.prefetch._waiting == 0
    finally:
        loop.close()


def test_an_event_held_across_close_gives_its_read_back() -> None:
    loop = asyncio.new_event_loop()
    try:
        watcher, _, conn, callback = _setup(loop)
        callback(_event(EventType.CREATED, "c_0000000003"))
        assert conn.prefetch._waiting == 1
        watcher.conn = None  # close() ran while the read was out
        conn.client.answer("c_0000000003")  # answered (or failed by the stop) later
        _turn(loop)
        assert conn.prefetch._waiting == 0 and watcher._prefetched == {}
    finally:
        loop.close()


def test_path_encoded_and_path_events_cross_at_once() -> None:
    loop = asyncio.new_event_loop()
    try:
        watcher, _, conn, callback = _setup(loop)
        callback(_event(EventType.CREATED, "base64_aG9zdA_0000000009"))
        _turn(loop)
        assert watcher._created == {"base64_aG9zdA_0000000009"} and conn.client.sent == {}
        watcher.generator_path = "/svc"
        callback(WatchedEvent(EventType.CHANGED, KeeperState.CONNECTED, "/svc"))
        _turn(loop)
        assert watcher._gen_dirty
    finally:
        loop.close()


def test_a_held_event_says_its_change_is_coming_from_kazoos_thread_once() -> None:
    loop = asyncio.new_event_loop()
    try:
        watcher, _, conn, _ = _setup(loop)
        heard: list[str] = []
        watcher.ctx.change_coming = lambda: heard.append("loop")
        watcher.ctx.change_coming_soon = lambda: heard.append("kazoo")
        callback = watcher._tree_callback()
        callback(_event(EventType.CREATED, "c_0000000003"))
        assert heard == ["kazoo"]  # before its read is answered: background work waits
        conn.client.answer("c_0000000003")
        _turn(loop)
        assert heard == ["kazoo"] and watcher._created == {"c_0000000003"}  # not twice
        callback(_event(EventType.DELETED, "a_0000000001"))  # no read: the loop says it
        _turn(loop)
        assert heard == ["kazoo", "loop"]
    finally:
        loop.close()
