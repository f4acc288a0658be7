"""Closing a replaced etcd client only once the calls still running on it have ended.

A failover (``EtcdConnection.rotate``) replaces the shared gRPC client, and closing its
channel cancels every call in flight on it. For most calls that costs a retry, but a lease's
keep-alive is the case that matters: on a slow, lossy link the keep-alive the lease keeper
left running beside the next one (``nerve.reporters.etcd_lease``) was merely late, and a
rotation caused by some other call (a timed-out key audit or put) cut it and sent it again
on a new connection (TCP and HTTP/2 handshakes over the same link), which lost leases at
20 % loss. A replaced client now takes no new calls and is closed when its last call ends
(each call has its own deadline; ``CLOSE_AT_THE_LATEST`` only guards against a leak).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

CLOSE_AT_THE_LATEST = 60.0  # seconds a replaced client may wait for its calls


class CallsInFlight:
    """How many calls run on each client, and the replaced clients waiting for theirs."""

    def __init__(self, close: Callable[[Any], Awaitable[None]]) -> None:
        self._close = close
        self._counts: dict[Any, int] = {}
        self._idle: dict[Any, asyncio.Event] = {}
        self._closing: set[asyncio.Task[None]] = set()

    @contextlib.contextmanager
    def running(self, client: Any) -> Iterator[None]:
        """Count one call on ``client`` while the block runs."""
        self._counts[client] = self._counts.get(client, 0) + 1
        try:
            yield
        finally:
            left = self._counts[client] - 1
            if left:
                self._counts[client] = left
            else:
                del self._counts[client]
                if (idle := self._idle.pop(client, None)) is not None:
                    idle.set()

    def calls_on(self, client: Any) -> int:
        return self._counts.get(client, 0)

    async def retire(self, client: Any) -> None:
        """``client`` was replaced: close it now if no call runs on it, else when the last
        one ends (in the background: the caller goes on with the next client)."""
        if client is None:
            return
        if client not in self._counts:
            await self._close(client)
            return
        idle = self._idle.setdefault(client, asyncio.Event())
        task = asyncio.ensure_future(self._close_when_idle(client, idle))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _close_when_idle(self, client: Any, idle: asyncio.Event) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(idle.wait(), CLOSE_AT_THE_LATEST)
        self._idle.pop(client, None)
        await self._close(client)

    async def close_all(self) -> None:
        """The connection closes: every replaced client now, calls or not."""
        for idle in self._idle.values():
            idle.set()
        await asyncio.gather(*self._closing, return_exceptions=True)
