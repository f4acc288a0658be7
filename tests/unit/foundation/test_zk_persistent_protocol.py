"""smartstack.zk_persistent without a server: the request bytes and the event routing."""

from __future__ import annotations

import struct

from kazoo.client import KazooClient
from kazoo.protocol.serialization import int_int_struct, write_string
from kazoo.protocol.states import EventType, KeeperState, WatchedEvent

from smartstack.kazoo_inline import InlineHandler, inline
from smartstack.zk_persistent import (
    AddWatch,
    RemoveWatches,
    TreeRouter,
    ancestors,
)


def test_requests_are_serialised_like_zookeepers_jute_records() -> None:
    # AddWatchRequest {ustring path; int mode}: a 4-byte length, the UTF-8 bytes, the mode.
    assert AddWatch("/svc", 1).serialize() == struct.pack(">i4si", 4, b"/svc", 1)
    assert AddWatch.type == 106
    assert RemoveWatches("/svc", 5).serialize() == struct.pack(">i4si", 4, b"/svc", 5)
    assert RemoveWatches.type == 18


def test_ancestors() -> None:
    assert ancestors("/a/b") == ["/a/b", "/a", "/"]
    assert ancestors("/") == ["/"]


def _client() -> KazooClient:
    """A client that never connects: only its event reader is used."""
    handler = InlineHandler()
    handler._running = True
    client = KazooClient(hosts="127.0.0.1:1", handler=handler)
    client._state = KeeperState.CONNECTED
    client._stopped.clear()  # as if started: a stopped client drops every event
    return client


def _recorder(into: list[WatchedEvent]):
    @inline
    def record(event: WatchedEvent) -> None:
        into.append(event)

    return record


def _event_bytes(kind: int, path: str) -> bytes:
    return bytes(int_int_struct.pack(kind, 3) + write_string(path))


def test_events_under_a_routed_path_reach_its_callbacks_and_kazoos_watches() -> None:
    client = _client()
    router = TreeRouter(client)
    heard: list[WatchedEvent] = []
    one_shot: list[WatchedEvent] = []
    router.add("/svc", _recorder(heard))
    client._data_watchers["/svc/a"].add(_recorder(one_shot))
    read = client._connection._read_watch_event
    read(_event_bytes(1, "/svc/a"), 0)  # NodeCreated of a child
    read(_event_bytes(2, "/svc/a/b"), 0)  # NodeDeleted of a grandchild: still under /svc
    read(_event_bytes(3, "/other"), 0)  # not routed
    assert [(e.type, e.path) for e in heard] == [
        (EventType.CREATED, "/svc/a"),
        (EventType.DELETED, "/svc/a/b"),
    ]
    assert [(e.type, e.path) for e in one_shot] == [(EventType.CREATED, "/svc/a")]
    assert "/svc/a" not in client._data_watchers  # kazoo's own one-shot semantics kept


def test_routes_are_removed_per_callback() -> None:
    client = _client()
    router = TreeRouter(client)
    first: list[WatchedEvent] = []
    second: list[WatchedEvent] = []
    router.add("/svc", f := _recorder(first))
    router.add("/svc", s := _recorder(second))
    assert router.remove("/svc", f) is False  # the other still listens
    client._connection._read_watch_event(_event_bytes(1, "/svc/x"), 0)
    assert (len(first), len(second)) == (0, 1)
    assert router.remove("/svc", s) is True and not router.routed("/svc")


def test_kazoos_reader_reads_a_routed_event_only_for_its_one_shot_watches() -> None:
    client = _client()
    router = TreeRouter(client)
    kazoo_read: list[str] = []
    kazoo_reader = router._kazoo_reader
    router._kazoo_reader = lambda buf, off: kazoo_read.append("read") or kazoo_reader(buf, off)
    heard: list[WatchedEvent] = []
    router.add("/svc", _recorder(heard))
    read = client._connection._read_watch_event
    read(_event_bytes(1, "/svc/a"), 0)  # no one-shot watch there: kazoo has nothing to do
    assert kazoo_read == [] and len(heard) == 1
    client._child_watchers["/svc/b"].add(_recorder([]))
    read(_event_bytes(3, "/svc/b"), 0)  # a child watch does not fire on NodeDataChanged
    assert kazoo_read == []
    read(_event_bytes(2, "/svc/b"), 0)  # ... but on NodeDeleted
    read(_event_bytes(3, "/other"), 0)  # not routed: kazoo's as ever
    assert kazoo_read == ["read", "read"] and len(heard) == 3
