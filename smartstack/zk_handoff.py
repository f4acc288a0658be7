"""A tree watch's events and their reads' answers, handed to the event loop in one crossing.

The read of a created or changed child starts in kazoo's thread with its event
(smartstack.zk_prefetch). Sent to the loop at once, the event woke the loop only to
wait there for the read, whose answer then crossed to the loop a second time: two
thread crossings per change, each waiting for a CPU and the GIL (2 cores), and the first
wake's work ran exactly while kazoo's thread wanted the GIL to read the answer. Here an
event with a read waits in kazoo's thread until the read is answered (the answer's
``inline`` callback, in kazoo's thread too); then event and answered read cross together.

Per watcher the loop must see the events in the order kazoo read them (a child's removal
must not overtake its creation's event still waiting for its read): a small FIFO whose
entries become ready when their read is answered (at once without a read); the ready head
crosses in one ``call_soon_threadsafe``, several entries together when they are ready.

Nothing waits forever: kazoo answers every request, with an exception on a connection
loss, a session expiry or a stop (``_notify_pending``: in kazoo's thread, which runs the
inline callbacks), and the loop takes such answers as before. A head that waited longer
than HOLD_MAX_S anyway (a request kazoo lost in a race with close()) is let go at the next
event, with the ready ones behind it: the loop then waits for its read itself
(``ZooKeeperConnection.wait_all``), as it did before this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from smartstack.kazoo_inline import inline

T = TypeVar("T")
HOLD_MAX_S = 1.0  # an entry older than this no longer holds the ones behind it


class _Entry(Generic[T]):
    __slots__ = ("item", "ready", "since")

    def __init__(self, item: T, ready: bool, since: float) -> None:
        self.item = item
        self.ready = ready
        self.since = since


class Handoff(Generic[T]):
    """One watcher's FIFO in kazoo's thread: ``push`` items, each with the read started for
    it (or None); ``deliver`` gets them on ``loop``, in push order, once their reads are
    answered, as many as are ready in one call."""

    def __init__(self, loop: asyncio.AbstractEventLoop, deliver: Callable[[list[T]], None]):
        self._loop = loop
        self._deliver = deliver
        self._lock = threading.Lock()  # kazoo's thread; a stop's answers may come from another
        self._queue: deque[_Entry[T]] = deque()
        self.crossings = 0  # call_soon_threadsafe calls made (for tests)

    @property
    def held(self) -> int:
        """Entries not handed to the loop yet."""
        return len(self._queue)

    def push(self, item: T, read: Any | None) -> None:
        """In kazoo's thread: hand ``item`` to the loop after every earlier item, and not
        before ``read`` (a kazoo async result) is answered."""
        now = time.monotonic()
        entry = _Entry(item, read is None, now)
        let_go = False
        with self._lock:
            for old in self._queue:  # (oldest first)
                if now - old.since <= HOLD_MAX_S:
                    break
                let_go = let_go or not old.ready
                old.ready = True  # (the loop waits for its read itself)
            self._queue.append(entry)
        if read is None or let_go:
            self._flush(None)
        if read is None:
            return

        @inline  # in the thread that answers the read (kazoo's): it never blocks
        def _answered(_result: Any) -> None:
            self._flush(entry)

        try:
            read.rawlink(_answered)  # (an answered read: runs at once)
        except Exception:
            self._flush(entry)  # not a kazoo result: the loop waits for it as before

    def _flush(self, answered: _Entry[T] | None) -> None:
        with self._lock:
            if answered is not None:
                answered.ready = True
            batch: list[T] = []
            while self._queue and self._queue[0].ready:
                batch.append(self._queue.popleft().item)
            if not batch:
                return
            self.crossings += 1
            # Under the lock: batches reach the loop in the order they left the queue. A
            # closed loop (the process is stopping) has no one left to tell.
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._deliver, batch)


def answered(results: Sequence[Any]) -> list[Any] | None:
    """The value or exception of every kazoo async result (or exception) of ``results``
    when all are answered already (the reads the loop got with their events); None when
    one is still waiting."""
    outcomes: list[Any] = []
    for result in results:
        if isinstance(result, BaseException):
            outcomes.append(result)
            continue
        if not result.ready():
            return None
        try:
            outcomes.append(result.get_nowait())
        except Exception as exc:
            outcomes.append(exc)
    return outcomes
