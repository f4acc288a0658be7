"""The ZooKeeper watcher's persistent recursive watch: event -> action, and what a sync of
those events reads and reports (no ZooKeeper: the reads are recorded, not made)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from kazoo.protocol.states import EventType, KeeperState, WatchedEvent
from synapse_testlib import Collector

from smartstack.record import Registration
from synapse.watchers.base import Entry
from synapse.watchers.zookeeper import ZooKeeperWatcher
from synapse.watchers.zookeeper_tree import TreeAction, classify

# The plain watcher's tests' builder (same directory: importable by module name).
from test_zookeeper_watcher_events import _watcher as plain_watcher  # isort: skip


@pytest.mark.parametrize(
    ("kind", "path", "expected"),
    [
        (EventType.CREATED, "/svc/a_1", (TreeAction.ADDED, "a_1")),
        (EventType.DELETED, "/svc/a_1", (TreeAction.REMOVED, "a_1")),
        (EventType.CHANGED, "/svc/a_1", (TreeAction.CHANGED, "a_1")),
        (EventType.CREATED, "/svc", (TreeAction.RELIST, None)),
        (EventType.DELETED, "/svc", (TreeAction.RELIST, None)),
        (EventType.CHANGED, "/svc", (TreeAction.PATH_DATA, None)),
        (EventType.CREATED, "/svc/a_1/deeper", (TreeAction.IGNORE, None)),  # a grandchild
        (EventType.DELETED, "/svc/a_1/deeper", (TreeAction.IGNORE, None)),
        (EventType.CREATED, "/svc2/a_1", (TreeAction.IGNORE, None)),  # a sibling's child
        (EventType.CREATED, "/sv", (TreeAction.IGNORE, None)),
        (EventType.CHILD, "/svc", (TreeAction.IGNORE, None)),  # not sent to such a watch
        (EventType.NONE, "/svc/a_1", (TreeAction.IGNORE, None)),
    ],
)
def test_classify(kind: str, path: str, expected: tuple) -> None:
    assert classify("/svc", kind, path) == expected


def test_classify_under_the_root() -> None:
    assert classify("/", EventType.CREATED, "/a_1") == (TreeAction.ADDED, "a_1")
    assert classify("/", EventType.CREATED, "/a/b") == (TreeAction.IGNORE, None)


def _watcher(loop: asyncio.AbstractEventLoop) -> tuple[ZooKeeperWatcher, Collector, list]:
    watcher, sink = plain_watcher(loop)  # two known children, a and b
    watcher._armed, watcher._relist, watcher._gen_dirty = True, False, False
    reads: list[list[str]] = []

    async def read_many(names: list[str]) -> None:  # what would be read, without reading
        reads.append(list(names))
        for name in names:
            port = 9000 + int(name.rsplit("_", 1)[1])
            watcher._children[name] = Entry(Registration("127.0.0.1", port, name[0]), None, 8, 1)

    watcher._read_many = read_many  # type: ignore[method-assign]
    return watcher, sink, reads


def _event(kind: str, path: str) -> WatchedEvent:
    return WatchedEvent(kind, KeeperState.CONNECTED, path)


def _ports_of(report: Any) -> list[int]:
    return sorted(f.registration.port for f in report.found)


def _ports(sink: Collector) -> list[int]:
    return _ports_of(sink.reports[-1])


def _synced(
    loop: asyncio.AbstractEventLoop, *events: tuple[str, str]
) -> tuple[ZooKeeperWatcher, Collector, list]:
    """A watcher that got ``events`` ((kind, path) pairs) and ran the sync they start."""
    watcher, sink, reads = _watcher(loop)
    for kind, path in events:
        watcher._on_tree(_event(kind, path))
    loop.run_until_complete(watcher._apply_tree(1.0))
    return watcher, sink, reads


def test_a_created_child_is_read_alone_and_a_deleted_one_dropped_without_a_read(
    own_loop: asyncio.AbstractEventLoop,
) -> None:
    _, sink, reads = _synced(
        own_loop,
        (EventType.CREATED, "/svc/c_0000000003"),
        (EventType.DELETED, "/svc/a_0000000001"),
        (EventType.CREATED, "/svc/c_0000000003/x"),  # ignored
    )
    assert reads == [["c_0000000003"]]
    assert _ports(sink) == [8002, 9003]
    assert sink.reports[-1].event_time == 1.0


def test_a_creation_the_listing_already_brought_is_not_read_again(
    own_loop: asyncio.AbstractEventLoop,
) -> None:
    """Events that arrived before the listing's reply are in the listing."""
    _, sink, reads = _synced(own_loop, (EventType.CREATED, "/svc/b_0000000002"))  # known
    assert reads == [[]] and sink.reports == []  # nothing new: no report


def test_deleted_and_created_again_under_the_same_name_is_read_again_never_dropped(
    own_loop: asyncio.AbstractEventLoop,
) -> None:
    watcher, sink, reads = _synced(
        own_loop,
        (EventType.DELETED, "/svc/b_0000000002"),
        (EventType.CREATED, "/svc/b_0000000002"),
        (EventType.CHANGED, "/svc/a_0000000001"),
    )
    assert reads == [["a_0000000001", "b_0000000002"]]
    assert [_ports_of(r) for r in sink.reports] == [[9001, 9002]]  # never without b
    assert watcher._relist is True  # a listing says whether it is still there


def test_the_path_itself_created_or_deleted_means_listing_again(
    own_loop: asyncio.AbstractEventLoop,
) -> None:
    watcher, _, _ = _watcher(own_loop)
    watcher._on_tree(_event(EventType.DELETED, "/svc"))
    assert watcher._relist is True
    assert watcher._wake.is_set()


def test_the_paths_own_data_is_the_generator_settings_only_when_kept_there(
    own_loop: asyncio.AbstractEventLoop,
) -> None:
    watcher, _, _ = _watcher(own_loop)
    watcher._on_tree(_event(EventType.CHANGED, "/svc"))
    assert watcher._gen_dirty is True  # generator_config_path defaults to the path
    assert watcher._gen_read_watch is None  # no one-shot watch on the watched path
    watcher._gen_dirty = False
    watcher._wake.clear()
    watcher.generator_path = "/elsewhere"
    watcher._on_tree(_event(EventType.CHANGED, "/svc"))
    assert watcher._gen_dirty is False and not watcher._wake.is_set()


def test_any_connection_state_change_means_adding_the_watch_again(
    own_loop: asyncio.AbstractEventLoop,
) -> None:
    watcher, _, _ = _watcher(own_loop)
    epoch = watcher._epoch
    watcher._on_state("suspended")
    assert watcher._armed is False and watcher._epoch == epoch + 1
    assert watcher._child_watch is watcher._data_watch  # one-shot until armed again


def test_a_change_is_timed_from_when_kazoos_thread_read_its_event(
    own_loop: asyncio.AbstractEventLoop,
) -> None:
    """synapse's own time includes the crossing from kazoo's thread to the loop: a sync's
    start is its earliest event, stamped where kazoo read it (else on the loop)."""
    watcher, _, _ = _watcher(own_loop)
    watcher._event_time = None
    watcher._on_tree(_event(EventType.CREATED, "/svc/c_0000000003"), None, None, 5.0)
    watcher._on_tree(_event(EventType.DELETED, "/svc/a_0000000001"), None, None, 4.0)
    watcher._mark()  # (a one-shot watch's event, stamped on the loop: later)
    assert watcher._event_time == 4.0
