"""Reading a new child's data from kazoo's thread, as soon as its watch event is read.

A persistent recursive watch names the child that was created (smartstack.zk_persistent),
and the watcher must then read it: the event goes from kazoo's connection thread to the
event loop, the watcher's task wakes, and only then does its read go back to kazoo's
thread and out. That is two thread hops (and everything else the loop is busy with)
before the one round trip the change needs. ``Prefetch.start``, called in kazoo's thread
where the event is read, queues the read at once; the event still goes to the loop as
before, and the watcher takes the read's answer instead of asking again.

A read started after the event answers with the child as of that event or later, which
is all the watcher needs; a later change of the child brings its own event and read. At
most ``MAX_WAITING`` reads wait for the loop at once per connection: in a burst the loop
is busy and the rest are read the usual way, many children in one multi-read
(smartstack.zk_multiread), instead of one request each.

This uses kazoo internals (``KazooClient._call``), like smartstack.zk_multiread.
"""

from __future__ import annotations

import threading
from typing import Any

from kazoo.client import KazooClient
from kazoo.protocol.serialization import GetData

from smartstack.zk_multiread import full_path

MAX_WAITING = 8  # reads started in kazoo's thread, not yet taken (or dropped) by the loop


class Prefetch:
    """Reads started from kazoo's thread, counted until the loop takes or drops them."""

    def __init__(self, client: KazooClient) -> None:
        self.client = client
        self._waiting = 0
        self._lock = threading.Lock()  # kazoo's thread starts, the loop releases
        self.started = 0  # how many reads went out this way

    def start(self, path: str) -> Any | None:
        """In kazoo's thread: queue a `get` of ``path`` (no watch); its kazoo async result,
        or None when MAX_WAITING reads already wait or the session is not usable."""
        with self._lock:
            if self._waiting >= MAX_WAITING:
                return None
            self._waiting += 1
        client = self.client
        result = client.handler.async_result()
        try:
            queued = client._call(GetData(full_path(client.chroot, path), False), result)
        except Exception:
            queued = False
        if queued is False:  # closed or expired: the loop reads (and fails) the usual way
            self.release(1)
            return None
        self.started += 1
        return result

    def release(self, count: int) -> None:
        """On the loop: ``count`` started reads were taken or dropped."""
        if count:
            with self._lock:
                self._waiting = max(0, self._waiting - count)
