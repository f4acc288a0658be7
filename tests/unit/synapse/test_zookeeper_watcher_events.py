"""The ZooKeeper watcher's event handling, without a ZooKeeper (no socket, no loop I/O)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from kazoo.protocol.states import EventType, KeeperState, WatchedEvent
from synapse_testlib import Collector, metrics, service_config

from smartstack.record import Registration
from smartstack.stall_clock import StallClock, stall_clock
from synapse.watchers.base import Entry, WatcherContext
from synapse.watchers.zookeeper import ZooKeeperWatcher


def _watcher(loop: asyncio.AbstractEventLoop) -> tuple[ZooKeeperWatcher, Collector]:
    sink = Collector()
    cfg = service_config({"method": "zookeeper", "hosts": ["127.0.0.1:1"], "path": "/svc"})
    watcher = ZooKeeperWatcher("svc", cfg, sink, WatcherContext(loop=loop, metrics=metrics()))
    for port, name in ((8001, "a_0000000001"), (8002, "b_0000000002")):
        registration = Registration(host="127.0.0.1", port=port, name=name[0])
        watcher._children[name] = Entry(registration, None, 7, 1)
    watcher.path_exists = True
    return watcher, sink


def _event(kind: EventType, path: str) -> WatchedEvent:
    return WatchedEvent(kind, KeeperState.CONNECTED, path)


def test_a_child_deleted_is_reported_gone_before_the_listing(own_loop: asyncio.AbstractEventLoop):
    watcher, sink = _watcher(own_loop)
    watcher._on_data(_event(EventType.DELETED, "/svc/a_0000000001"))
    watcher._drop_deleted(1.0)  # what a sync does first, before listing the children
    assert [f.registration.port for f in sink.reports[-1].found] == [8002]
    assert sink.reports[-1].event_time == 1.0
    assert "a_0000000001" not in watcher._children
    reports = len(sink.reports)
    watcher._drop_deleted(2.0)  # nothing more deleted: no report
    assert len(sink.reports) == reports


def test_a_changed_child_is_not_dropped_but_read_again(own_loop: asyncio.AbstractEventLoop):
    watcher, sink = _watcher(own_loop)
    watcher._on_data(_event(EventType.CHANGED, "/svc/b_0000000002"))
    watcher._drop_deleted(1.0)
    assert sink.reports == [] and "b_0000000002" in watcher._changed
    assert set(watcher._children) == {"a_0000000001", "b_0000000002"}


def test_a_connection_before_the_first_listing_re_arms_nothing(own_loop: asyncio.AbstractEventLoop):
    """Checking cached children is for reconnects: at a start (the connection announced
    while the first listing is under way) it would read every child for nothing."""
    watcher, _ = _watcher(own_loop)
    watcher._on_state("connected")
    assert watcher._verify is False
    watcher._listed = True  # a first listing was done: a reconnect now re-arms
    watcher._on_state("connected")
    assert watcher._verify is True


class _Stat:
    def __init__(self, mzxid: int) -> None:
        self.mzxid = mzxid


class _MultiReadConn:
    """get_many only: the batched multi-read's (data, stat) or exception per path."""

    def __init__(self, replies: dict[str, object]) -> None:
        self.replies, self.asked = replies, []

    async def get_many(self, paths, watch=None):
        self.asked.append(list(paths))
        return [self.replies[p] for p in paths]


def test_after_a_reconnect_cached_children_are_checked_in_one_batched_read(
    own_loop: asyncio.AbstractEventLoop,
):
    """One get_many for all cached children (one multi-read request, not an exists() each);
    only a child whose mzxid moved meanwhile is decoded again, a gone one is dropped."""
    from kazoo.exceptions import NoNodeError

    from smartstack.record import encode

    watcher, _ = _watcher(own_loop)
    watcher._children["c_0000000003"] = Entry(
        Registration(host="127.0.0.1", port=8003, name="c"), None, 7, 3
    )
    moved = encode(Registration(host="127.0.0.1", port=8012, name="b"))
    conn = _MultiReadConn({
        "/svc/a_0000000001": (b"not even json", _Stat(7)),  # unchanged: not decoded
        "/svc/b_0000000002": (moved, _Stat(9)),
        "/svc/c_0000000003": NoNodeError(),
    })  # fmt: skip
    watcher.conn = conn
    own_loop.run_until_complete(watcher._check_many(sorted(watcher._children)))
    assert len(conn.asked) == 1
    assert watcher._children["a_0000000001"].registration.port == 8001
    assert watcher._children["b_0000000002"].registration.port == 8012
    assert watcher._children["b_0000000002"].version == 9
    assert "c_0000000003" not in watcher._children


class _Conn:
    """What the watcher's run loop asks of its pooled connection."""

    connected, announced, auth_error = True, False, None
    loop = prefetch = None  # (the tree watch's callback holds them; never called here)

    def on_loop(self, callback):
        return callback

    def add_listener(self, listener) -> None:
        pass


class _Pool:
    def acquire(self, *args):
        return _Conn()


async def relist_windows(monkeypatch, stall_s: float = 0.0) -> list[float]:
    """The relist_jitter windows waited before the list after a reconnect (``stall_s``: this
    process stood still that long just before)."""
    from synapse.watchers import zookeeper as zookeeper_watcher

    cfg = service_config({"method": "zookeeper", "hosts": ["127.0.0.1:1"], "path": "/svc",
                          "relist_jitter": 45})  # fmt: skip
    ctx = WatcherContext(loop=asyncio.get_running_loop(), metrics=metrics(), zk_pool=_Pool())
    watcher = ZooKeeperWatcher("svc", cfg, Collector(), ctx)
    windows, synced = [], asyncio.Event()
    monkeypatch.setattr(zookeeper_watcher, "spread", lambda window: windows.append(window) or 0)

    async def sync() -> None:
        synced.set()

    watcher._sync = sync  # type: ignore[method-assign]
    task = asyncio.create_task(watcher.run())
    try:
        await asyncio.sleep(0)
        if stall_s:
            now = time.monotonic()
            stall_clock().tick(due=now - stall_s, now=now)  # its overdue tick, on resume
        watcher._listed = True
        watcher._on_state("connected")  # the connection came back: check and list again
        await asyncio.wait_for(synced.wait(), 5)
        return windows
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_after_a_reconnect_the_list_waits_a_spread_of_relist_jitter(monkeypatch):
    """A fleet's watchers must not all list again the instant the registry is back: the
    window is the discovery block's ``relist_jitter`` (minutes at thousands of hosts)."""
    assert await relist_windows(monkeypatch) == [45]


async def test_after_its_own_stall_the_list_is_renewed_at_once(monkeypatch, caplog):
    """synapse frozen past its session (SIGSTOP, a VM pause): nobody else re-lists, and
    its list is as old as the stall (was: served 0.8-1.6 s more, a dead server kept UP)."""
    caplog.set_level(logging.INFO)
    assert await relist_windows(monkeypatch, stall_s=20.0) == []
    assert "zk_relist_after_stall" in caplog.text


def test_the_stall_clock_sees_a_late_tick_only() -> None:
    clock = StallClock()
    clock.tick(due=100.0, now=101.5)  # a busy loop: not a stall
    assert clock.stalled_within(10.0, now=101.5) is None
    clock.tick(due=102.0, now=122.0)
    assert clock.stalled_within(10.0, now=122.2) == 20.0
    assert clock.stalled_within(10.0, now=133.0) is None  # long over: a fleet's reconnect


def test_relist_jitter_is_checked_like_any_key():
    import pytest

    from synapse.discovery_config import DiscoveryConfig

    assert DiscoveryConfig(method="zookeeper", hosts=["h:1"], path="/s").relist_jitter == 2.0
    with pytest.raises(ValueError, match="relist_jitter"):
        DiscoveryConfig(method="zookeeper", hosts=["h:1"], path="/s", relist_jitter=-1)
