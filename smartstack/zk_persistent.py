"""ZooKeeper's persistent recursive watches (3.6+) for kazoo, which has no API for them.

A one-shot children watch says only "the children changed": the watcher must list them
again (and set the watch again) and then read the new child, two round trips after the
event. A persistent recursive watch on a service's path (``addWatch``, opcode 106, mode
PERSISTENT_RECURSIVE) stays set, and its NodeCreated / NodeDeleted / NodeDataChanged
events name the znode: a new child costs one read (none when its name carries the
record), a removed one none at all.

kazoo knows nothing of these watches: its event reader hands an event only to the
one-shot watches filed for that exact path (and drops them). ``TreeRouter`` wraps that
reader on one client: an event at or under a routed path goes to the path's callbacks
too, then to kazoo's own reader as before when kazoo has a one-shot watch there (one
event per change reaches a connection, whichever watches it matched on the server, so both
must see it; without one, kazoo's reader would only parse it again). kazoo does not set
watches again after a reconnect and forgets its own: the server forgets ours with the
connection, so callers add them again after every (re)connection and list again.

ZooKeeper before 3.9 keeps one watch mode per path and connection (ZOOKEEPER-4466): a
one-shot watch set on the watched path itself turns the persistent watch into a one-shot
one. Callers must not set one there; the recursive watch hears that path's changes anyway.

A server before 3.6 answers the unknown opcode with UNIMPLEMENTED (``UnimplementedError``)
and closes the connection (not the session: kazoo reconnects to it): callers then keep to
one-shot watches, and list again as after any reconnection. This uses kazoo internals
(``KazooClient._connection._read_watch_event``, ``_call``, ``unchroot``), pinned by
tests/integration/synapse/test_zk_persistent.py.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable
from typing import Any

from kazoo.client import KazooClient
from kazoo.protocol.paths import _prefix_root
from kazoo.protocol.serialization import Watch, int_struct, write_string
from kazoo.protocol.states import EVENT_TYPE_MAP, Callback, WatchedEvent

ADD_WATCH = 106  # ZooKeeper's OpCode.addWatch
REMOVE_WATCHES = 18  # OpCode.removeWatches
PERSISTENT_RECURSIVE = 1  # AddWatchMode.PERSISTENT_RECURSIVE
WATCHER_TYPE_PERSISTENT_RECURSIVE = 5  # Watcher.WatcherType.PersistentRecursive
WATCHER_TYPE_ANY = 3  # Watcher.WatcherType.Any: every watch of the path
NODE_EVENTS = (1, 2, 3)  # NodeCreated, NodeDeleted, NodeDataChanged: what such a watch sends
DELETED_EVENT = 2


class AddWatch(namedtuple("AddWatch", "path mode")):
    """AddWatchRequest {ustring path; int mode}; the reply is ErrorResponse {int err}, whose
    error already came in the reply header."""

    type = ADD_WATCH

    def serialize(self) -> bytearray:
        return bytearray(write_string(self.path) + int_struct.pack(self.mode))

    @classmethod
    def deserialize(cls, data: bytes, offset: int) -> bool:
        return True


class RemoveWatches(namedtuple("RemoveWatches", "path watcher_type")):
    """RemoveWatchesRequest {ustring path; int type}; the reply is its header only."""

    type = REMOVE_WATCHES

    def serialize(self) -> bytearray:
        return bytearray(write_string(self.path) + int_struct.pack(self.watcher_type))

    @classmethod
    def deserialize(cls, data: bytes, offset: int) -> bool:
        return True


def ancestors(path: str) -> list[str]:
    """``path`` and every znode above it: "/a/b" -> ["/a/b", "/a", "/"]."""
    out = [path]
    while path not in ("/", ""):
        path = path.rsplit("/", 1)[0] or "/"
        out.append(path)
    return out


class TreeRouter:
    """Routes the events of persistent recursive watches on one kazoo client."""

    def __init__(self, client: KazooClient) -> None:
        self.client = client
        # Read in kazoo's connection thread, replaced whole from others: no lock on reads.
        self._routes: dict[str, frozenset[Callable[[WatchedEvent], Any]]] = {}
        connection = client._connection
        self._kazoo_reader = connection._read_watch_event
        connection._read_watch_event = self._read_watch_event

    def full_path(self, path: str) -> str:
        return _prefix_root(self.client.chroot, path)

    def add(self, path: str, callback: Callable[[WatchedEvent], Any]) -> None:
        """Hand every event at or under ``path`` to ``callback`` (in kazoo's thread: mark it
        ``inline`` when it only hops to the loop)."""
        full = self.full_path(path)
        routes = dict(self._routes)
        routes[full] = routes.get(full, frozenset()) | {callback}
        self._routes = routes

    def remove(self, path: str, callback: Callable[[WatchedEvent], Any]) -> bool:
        """Stop routing to ``callback``; True when nothing is routed from ``path`` any more."""
        full = self.full_path(path)
        routes = dict(self._routes)
        left = routes.get(full, frozenset()) - {callback}
        if left:
            routes[full] = left
        else:
            routes.pop(full, None)
        self._routes = routes
        return not left

    def routed(self, path: str) -> bool:
        return self.full_path(path) in self._routes

    def _read_watch_event(self, buffer: bytes, offset: int) -> Any:
        routes = self._routes
        if routes:
            watch, _ = Watch.deserialize(buffer, offset)
            if watch.type in NODE_EVENTS and not self.client._stopped.is_set():
                callbacks = [cb for p in ancestors(watch.path) for cb in routes.get(p, ())]
                if callbacks:
                    client = self.client
                    ev = WatchedEvent(EVENT_TYPE_MAP[watch.type], client._state,
                                      client.unchroot(watch.path))  # fmt: skip
                    for callback in callbacks:
                        client.handler.dispatch_callback(Callback("watch", callback, (ev,)))
                    if not self._one_shot(watch.type, watch.path):
                        return None  # kazoo's reader would parse it again to find nothing
        return self._kazoo_reader(buffer, offset)  # kazoo's one-shot watches on the path

    def _one_shot(self, kind: int, path: str) -> bool:
        """Whether kazoo's own reader has a one-shot watch to fire for this node event."""
        client = self.client
        if path in client._data_watchers:
            return True
        return kind == DELETED_EVENT and path in client._child_watchers


def start_add_watch(
    client: KazooClient, path: str, call: Callable[[Any, Any], Any] | None = None
) -> Any:
    """Queue an ``addWatch`` (persistent, recursive) of ``path``; its kazoo async result.
    ``call``: how to queue it (``client._call``, or a smartstack.kazoo_bulk.WakeBatcher's)."""
    result = client.handler.async_result()
    request = AddWatch(_prefix_root(client.chroot, path), PERSISTENT_RECURSIVE)
    (call or client._call)(request, result)
    return result


def start_remove_watch(client: KazooClient, path: str) -> Any:
    """Queue a ``removeWatches`` of our persistent recursive watch on ``path``.

    ZooKeeper 3.6-3.8 cannot remove one kind of watch (type 5 fails with MarshallingError):
    when kazoo has no one-shot watch there, remove all of the path's (type Any, 3)."""
    result = client.handler.async_result()
    full = _prefix_root(client.chroot, path)
    kind = WATCHER_TYPE_PERSISTENT_RECURSIVE
    if full not in client._data_watchers and full not in client._child_watchers:
        kind = WATCHER_TYPE_ANY
    client._call(RemoveWatches(full, kind), result)
    return result
