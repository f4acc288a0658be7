"""The ZooKeeper watcher's persistent recursive watch (ZooKeeper 3.6+): events name the child.

With one-shot watches an added server costs two round trips after the event: list the
children (setting the watch again), then read the new child. One persistent recursive
watch on the service's path (smartstack.zk_persistent) names the child in its event:

- NodeCreated of a child: read that child (nothing with ``use_path_encoding``);
- NodeDeleted of a child: drop it, no read;
- NodeDataChanged of a child: read it again (nerve never does; a hand-written record may);
- NodeCreated / NodeDeleted of the path itself: list again;
- NodeDataChanged of the path itself: read the generator settings again when they are
  kept there (a one-shot watch on the path would turn the persistent one into a
  one-shot one on ZooKeeper before 3.9: smartstack.zk_persistent);
- anything deeper (a grandchild): ignored.

The watch is added before the children are listed (after every connection: the server
forgets it with the connection), so no change falls between the two. Events that arrive
before the listing's reply are already in it: a created child the listing brought is not
read again; one deleted and re-created is dropped first and then read. When the server
refuses the watch (before 3.6) the watcher keeps to its one-shot watches, as before.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kazoo.protocol.states import EventType, WatchedEvent

from smartstack.kazoo_inline import inline
from smartstack.record import PATH_ENCODING_PREFIX

if TYPE_CHECKING:
    from smartstack.zookeeper import ZooKeeperConnection
    from synapse.watchers.base import Entry


class TreeAction(enum.Enum):
    ADDED = "added"
    REMOVED = "removed"
    CHANGED = "changed"
    RELIST = "relist"
    PATH_DATA = "path_data"
    IGNORE = "ignore"


_CHILD_ACTIONS = {
    EventType.CREATED: TreeAction.ADDED,
    EventType.DELETED: TreeAction.REMOVED,
    EventType.CHANGED: TreeAction.CHANGED,
}


def classify(path: str, event_type: str, event_path: str) -> tuple[TreeAction, str | None]:
    """What an event of the recursive watch on ``path`` means: the action and the child."""
    if event_path == path:
        if event_type in (EventType.CREATED, EventType.DELETED):
            return TreeAction.RELIST, None
        if event_type == EventType.CHANGED:
            return TreeAction.PATH_DATA, None
        return TreeAction.IGNORE, None
    base = "/" if path == "/" else f"{path}/"
    child = event_path[len(base) :] if event_path.startswith(base) else ""
    if not child or "/" in child:  # not under the path, or a grandchild
        return TreeAction.IGNORE, None
    action = _CHILD_ACTIONS.get(event_type)
    return (action, child) if action is not None else (TreeAction.IGNORE, None)


class TreeWatch:
    """The persistent-watch half of ZooKeeperWatcher (a mixin: it shares its state)."""

    path: str
    conn: ZooKeeperConnection | None
    _children: dict[str, Entry]
    _changed: set[str]
    _deleted: set[str]
    _gen_dirty: bool
    generator_path: str | None
    _gen_watch: Callable[..., Any] | None
    path_exists: bool | None
    _data_watch: Callable[..., Any] | None

    if TYPE_CHECKING:  # ZooKeeperWatcher's

        def count_event(self) -> None: ...
        def _count_reads(self, count: int) -> None: ...
        def _mark(self, at: float | None = None) -> None: ...
        def _report_cache(self, event_time: float) -> None: ...
        def _base(self) -> str: ...
        def _take(self, name: str, reply: Any, origin: str) -> None: ...
        async def _read_many(self, names: list[str]) -> None: ...
        async def _read_generator_config(self) -> None: ...

    def _init_tree(self) -> None:
        self._tree_watch: Callable[..., Any] | None = None  # None: one-shot watches only
        self._armed = False  # our persistent watch is set on the current connection
        self._relist = True  # the next sync lists the children (else: applies the events)
        self._created: set[str] = set()  # children the tree watch saw created
        self._epoch = 0  # bumped by every connection state change
        # child -> its read, started in kazoo's thread with its event (smartstack.zk_prefetch)
        self._prefetched: dict[str, Any] = {}

    def _tree_state(self) -> None:
        """Any connection state change: the server forgot the watch with the connection."""
        self._epoch += 1
        self._armed = False
        self._drop_prefetched()  # (answered with the connection's loss, or from before it)

    def _tree_callback(self) -> Callable[[WatchedEvent], None]:
        """The tree watch's callback, in kazoo's thread: a created or changed child's read
        starts right there, before the event reaches the loop (two thread hops and the
        loop's other work less before the change's one round trip); then the event and
        that read go to the loop together. Path-encoded children need no read."""
        assert self.conn is not None
        loop, prefetch, path, on_tree = self.conn.loop, self.conn.prefetch, self.path, self._on_tree

        @inline
        def _in_kazoo_thread(ev: WatchedEvent) -> None:
            # The change's clock starts here, where its event is read, not on the loop: the
            # crossing to the loop is synapse's own time too (its trace, /status).
            seen = time.monotonic()
            read = None
            if ev.type in (EventType.CREATED, EventType.CHANGED):
                child = classify(path, ev.type, ev.path)[1]
                if child is not None and not child.startswith(PATH_ENCODING_PREFIX):
                    read = prefetch.start(ev.path)
            loop.call_soon_threadsafe(on_tree, ev, read, prefetch, seen)

        return _in_kazoo_thread

    def _keep_prefetched(self, child: str, read: Any | None) -> None:
        """A child's latest event came with ``read`` (or without one): an older read of it
        was started before that event, so it no longer counts."""
        if self._prefetched.pop(child, None) is not None and self.conn is not None:
            self.conn.prefetch.release(1)
        if read is not None:
            self._prefetched[child] = read
            self._count_reads(1)

    async def _take_prefetched(self, names: list[str]) -> list[str]:
        """Take the answers of the reads started with the events of ``names``; the names
        still to read."""
        assert self.conn is not None
        started = {n: self._prefetched.pop(n) for n in names if n in self._prefetched}
        if not started:
            return names
        self.conn.prefetch.release(len(started))
        replies = await self.conn.wait_all(list(started.values()))
        base = self._base()
        for name, reply in zip(started, replies, strict=True):
            self._take(name, reply, f"zookeeper:{base}{name}")
        return [n for n in names if n not in started]

    def _drop_prefetched(self, keep: set[str] | frozenset[str] = frozenset()) -> None:
        """Forget the reads started for children other than ``keep`` (their answers are
        not waited for)."""
        drop = [name for name in self._prefetched if name not in keep]
        for name in drop:
            del self._prefetched[name]
        if drop and self.conn is not None:
            self.conn.prefetch.release(len(drop))

    @property
    def _child_watch(self) -> Callable[..., Any] | None:
        """The one-shot data watch for child reads: none needed under the tree watch."""
        return None if self._armed else self._data_watch

    @property
    def _gen_read_watch(self) -> Callable[..., Any] | None:
        """The generator settings' one-shot watch: none on the path the tree watch holds."""
        return None if self._armed and self.generator_path == self.path else self._gen_watch

    def _on_tree(
        self, ev: WatchedEvent, read: Any = None, prefetch: Any = None, seen: float | None = None
    ) -> None:
        """One event of the tree watch, on the loop; ``read``: the child's read started
        with it in kazoo's thread (``_tree_callback``) by ``prefetch``, if any; ``seen``:
        when kazoo's thread read the event."""
        if prefetch is not None and (self.conn is None or prefetch is not self.conn.prefetch):
            # queued by kazoo's thread before close() (or for an earlier connection): the
            # read's place goes back, else the shared connection's prefetch ends up off
            if read is not None:
                prefetch.release(1)
            return
        action, child = classify(self.path, ev.type, ev.path)
        if child is not None:
            self._keep_prefetched(child, read)  # (a removal: drops the child's older read)
        if action is TreeAction.PATH_DATA and self.generator_path != self.path:
            return
        if action is TreeAction.IGNORE:
            return
        self.count_event()
        if action is TreeAction.RELIST:
            self._relist = True
        elif action is TreeAction.PATH_DATA:
            self._gen_dirty = True
        elif action is TreeAction.ADDED:
            self._created.add(child)
        elif action is TreeAction.CHANGED:
            self._changed.add(child)
        else:
            self._deleted.add(child)
        self._mark(seen)

    def _send_tree(self) -> tuple[Any, int] | None:
        """Ask for the persistent watch. The listing goes right after it, without waiting:
        the server answers in order, so the add's answer is in before the listing's
        (``_tree_answer``). Until then the watcher counts on it: no one-shot watches."""
        assert self.conn is not None and self._tree_watch is not None
        self._relist = True
        sent = self.conn.send_tree_watch(self.path, self._tree_watch)
        if sent is None:  # refused before: one-shot watches
            self._tree_watch = None
            return None
        self._armed = True
        return sent, self._epoch

    def _tree_answer(self, sending: tuple[Any, int]) -> None:
        """After the listing's answer: was the watch set on this connection?"""
        sent, epoch = sending
        if self.conn is None or self._tree_watch is None:
            return
        taken = self.conn.tree_watch_taken(sent, self.path, self._tree_watch)
        if taken and epoch == self._epoch:
            return
        self._armed, self._relist = False, True  # list again, with the watches we have now
        if taken is False:  # refused (before 3.6): one-shot watches, set by a new listing
            self._tree_watch = None
        self._mark()  # the listing just sent set no watch: nothing else would wake us

    def _close_tree(self, conn: ZooKeeperConnection) -> None:
        if self._tree_watch is not None:
            conn.unwatch_tree(self.path, self._tree_watch)
        if self._prefetched:
            conn.prefetch.release(len(self._prefetched))
            self._prefetched.clear()

    def _drop_deleted(self, event_time: float, report: bool = True) -> bool:
        """A child's data watch (or the tree watch) named it deleted: report without it at
        once, before any listing (a ZooKeeper round trip less on the path of a removal). A
        listing that follows re-arms the children watch; a child re-created under the same
        name is new to it and read. True when children were dropped (``report``: False,
        the caller reports them)."""
        gone = [name for name in self._deleted if name in self._children]
        self._deleted.clear()
        again = [name for name in gone if name in self._created]
        if again:
            # Deleted and created again (or deleted once more): no report without it
            # meanwhile; read it again, and a listing says whether it is still there.
            self._created.difference_update(again)
            self._changed.update(again)
            self._relist = True
            self._mark()
            gone = [name for name in gone if name not in again]
        if not (gone and self.path_exists):
            return False
        for name in gone:
            del self._children[name]
            self._changed.discard(name)
        if report:
            self._report_cache(event_time)
        return True

    async def _apply_tree(self, event_time: float) -> None:
        """The events since the last sync, without listing: drops, then reads, in ONE
        report. In a burst a sync has both; reported a read apart, the drops would start
        the reconciler's round at once and the reads land after it began: every change of
        the burst's tail would wait for a second round (tens of ms each at 1,000 servers).
        A sync of drops alone (a lone removal) reads nothing and reports at once."""
        dropped = self._drop_deleted(event_time, report=False)
        to_read = {name for name in self._created if name not in self._children}
        to_read |= self._changed
        self._created.clear()
        self._drop_prefetched(keep=to_read)  # (a creation the listing brought: read there)
        gen = self._gen_dirty
        try:
            if gen:
                await asyncio.gather(
                    self._read_generator_config(),
                    self._read_many(sorted(to_read)),
                )
            else:
                await self._read_many(sorted(to_read))
        except BaseException:
            self._relist = True  # list and compare: what was not read is still new then
            if dropped:
                self._report_cache(event_time)  # a removal must not wait for a reconnect
            raise
        if to_read or gen or dropped:
            self._report_cache(event_time)
