"""kazoo requests queued in one turn of the event loop wake kazoo's connection once.

``KazooClient._call`` appends a request to the client's queue and writes one wake-up
byte to its connection's socket pair. That ``send`` releases the GIL, and kazoo's
connection thread takes it to send the request before the caller goes on: at a cold
start every service's watcher asks for its persistent watch, and a thousand of those
calls cost ~0.8 s of the loop's time. ``WakeBatcher.call`` queues the request the same
way and owes the byte: all bytes owed in a turn go in one ``send`` at the end of it.

The order of requests is the queue's, whoever writes the bytes: kazoo's thread sends
from the queue's head when it reads a byte (smartstack.kazoo_conn: up to a batch of
requests, reading at most one byte each), and reads a byte left over when the queue is
empty (a request sent before its byte came, or failed by a connection loss). This uses
kazoo internals (``_queue``, ``_state``, ``_connection._write_sock``), like
smartstack.zk_persistent.
"""

from __future__ import annotations

import asyncio
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import ConnectionClosedError
from kazoo.protocol.states import KeeperState

_REFUSED = (KeeperState.AUTH_FAILED, KeeperState.CLOSED, KeeperState.EXPIRED_SESSION)


class WakeBatcher:
    """``KazooClient._call`` with one wake-up write per loop turn (call it on the loop)."""

    def __init__(self, client: KazooClient, loop: asyncio.AbstractEventLoop) -> None:
        self.client, self.loop = client, loop
        self._owed: list[Any] = []  # the async results of requests queued, not woken yet

    def call(self, request: Any, async_object: Any) -> None:
        client = self.client
        if client._state in _REFUSED:
            client._call(request, async_object)  # kazoo fails it with the right error
            return
        client._queue.append((request, async_object))
        self._owed.append(async_object)
        if len(self._owed) == 1:
            self.loop.call_soon(self._wake)

    def _wake(self) -> None:
        owed, self._owed = self._owed, []
        write_sock = self.client._connection._write_sock
        try:
            write_sock.sendall(b"\0" * len(owed))  # (a few KB at most: the pair buffers it)
        except Exception:  # closed meanwhile (None or a closed socket), as in kazoo's _call
            for async_object in owed:
                if not async_object.ready():
                    async_object.set_exception(ConnectionClosedError("Connection has been closed"))
