"""Many etcd prefix watches on one gRPC Watch stream, dispatched by watch id.

aetcd creates one watch at a time and, each time one is created, wakes every caller
waiting to create another (an ``asyncio.Condition``'s ``notify_all``): a thousand
watchers starting together cost ~11 s of CPU, and one created behind the others waited
seconds. Here a creation is a request on the stream and a future: all are sent at once,
etcd answers ``created`` in the order it received them (its watch server handles one
request after the other), and every later response is routed to its watch by id.

A stream that fails, or that etcd ends, fails every watch on it with an aetcd exception
(``ConnectionFailedError`` when it just ended): their watchers list again and watch anew,
on a new stream. aetcd's own watcher never noticed a stream that closed cleanly. The
stream requires a leader (``require_leader``): etcd ends it with UNAVAILABLE, a
``ConnectionFailedError``, on a member that lost its leader, and the watchers move on.

A stream that stops answering is abandoned too: a creation that hears nothing on the stream
for ``timeout`` seconds (etcd answers a create in milliseconds; creates queued behind
others wait while the stream keeps answering them) fails the stream and every watch on it,
so the next creation opens a new one instead of queueing on the dead one for ever.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import aetcd
import aetcd.exceptions
import aetcd.rpc
import aetcd.utils

from smartstack.etcd_events import (  # noqa: F401 - WatchOverflow, WatchEvent: re-exported
    KINDS,
    MAX_PENDING,
    REQUIRE_LEADER,
    EventQueue,
    WatchEvent,
    WatchOverflow,
)

OpenCall = Callable[[AsyncIterator[Any]], AsyncIterator[Any]]


# A creation waits at most this many ``timeout``s in all, even while others' are answered.
CREATE_PATIENCE = 10


class WatchCreateTimeout(TimeoutError):
    """The stream did not answer a watch creation: it is abandoned. A TimeoutError, so
    ``EtcdConnection.with_client`` probes the endpoint and moves on only if that fails too."""


class WatchStreamStalled(aetcd.exceptions.ClientError):
    """What the other watches of an abandoned stream fail with: not a connection error, so
    their watchers list and watch again (on a new stream) without dropping the client."""


def require_leader(metadata: tuple[tuple[str, str], ...] | None) -> tuple[tuple[str, str], ...]:
    """A call's metadata (the auth token, if any) asking etcd to end the stream when its
    member has no leader: it then fails with UNAVAILABLE, a connection error, and the
    connection moves to another endpoint."""
    return (*(metadata or ()), REQUIRE_LEADER)


def client_error(exc: BaseException) -> BaseException:
    """A gRPC error as the aetcd exception its calls raise (the others unchanged)."""
    if not isinstance(exc, aetcd.rpc.AioRpcError):
        return exc
    try:
        aetcd.exceptions._handle_exception(exc)
    except Exception as converted:
        return converted
    return exc  # pragma: no cover - _handle_exception always raises


class PrefixWatch(EventQueue):
    """One watch on a ``WatchStream`` (see ``EventQueue`` for how its events are taken)."""

    def __init__(self, stream: WatchStream, max_pending: int = MAX_PENDING) -> None:
        super().__init__(max_pending)
        self.stream = stream
        self.client = stream.client  # the client whose stream carries it (for fail-over)
        self.watch_id: int | None = None
        self.created: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def _detach(self) -> None:
        self.stream.forget(self)

    def fail(self, exc: BaseException) -> None:
        if not self.created.done():
            self.created.set_exception(exc)
            self.created.exception()  # retrieved: the creator may have given up already
        else:
            self._end(exc)


class WatchStream:
    """One Watch stream of one connected aetcd client, carrying many watches."""

    def __init__(self, client: aetcd.Client, open_call: OpenCall | None = None) -> None:
        self.client = client
        self._open_call = open_call
        self._requests: asyncio.Queue[aetcd.rpc.WatchRequest | None] = asyncio.Queue()
        self._creating: collections.deque[PrefixWatch] = collections.deque()
        self._watches: dict[int, PrefixWatch] = {}
        self._task: asyncio.Task[None] | None = None
        self.error: BaseException | None = None  # set once the stream is gone
        self._heard = 0.0  # loop time of the last response (or of the stream's start)

    @property
    def broken(self) -> bool:
        return self.error is not None

    async def watch_prefix(
        self, prefix: bytes, start_revision: int, timeout: float | None = None
    ) -> PrefixWatch:
        """A created watch; ``timeout``: abandon the stream when it says nothing for that
        long while this creation waits (see the module docstring). None: wait."""
        if self.error is not None:
            raise self.error
        loop = asyncio.get_running_loop()
        if self._task is None:
            self._heard = loop.time()
            self._task = asyncio.ensure_future(self._run())
        elif not self._creating:
            self._heard = max(self._heard, loop.time())  # silence counts from our request
        watch = PrefixWatch(self)
        self._creating.append(watch)
        request = aetcd.rpc.WatchCreateRequest(
            key=prefix,
            range_end=aetcd.utils.prefix_range_end(prefix),
            start_revision=start_revision,
        )
        self._requests.put_nowait(aetcd.rpc.WatchRequest(create_request=request))
        try:
            await self._created(watch, timeout)
        except asyncio.CancelledError:
            await watch.cancel()  # created later, it is cancelled at once
            raise
        return watch

    async def _created(self, watch: PrefixWatch, timeout: float | None) -> None:
        if timeout is None:
            await watch.created
            return
        loop = asyncio.get_running_loop()
        give_up = loop.time() + CREATE_PATIENCE * timeout
        wait = timeout
        while True:
            try:
                await asyncio.wait_for(asyncio.shield(watch.created), wait)
                return
            except TimeoutError:
                if watch.created.done():
                    watch.created.result()  # answered (or failed) just now
                    return
                now = loop.time()
                wait = min(self._heard + timeout, give_up) - now
                if wait > 0:
                    continue  # the stream answers the creates queued before ours
            silent = now - self._heard
            self._fail_all(WatchStreamStalled(f"etcd watch stream silent for {silent:.1f} s"))
            if self._task is not None:
                self._task.cancel()  # and its gRPC call with it
            raise WatchCreateTimeout(f"etcd did not answer a watch creation in {timeout} s")

    def forget(self, watch: PrefixWatch) -> None:
        """Stop a watch's events (a watch still being created is cancelled once it is)."""
        if watch.watch_id is not None and self._watches.pop(watch.watch_id, None) is not None:
            self._send_cancel(watch.watch_id)

    def _send_cancel(self, watch_id: int) -> None:
        if self.error is None:
            cancel = aetcd.rpc.WatchCancelRequest(watch_id=watch_id)
            self._requests.put_nowait(aetcd.rpc.WatchRequest(cancel_request=cancel))

    async def _request_stream(self) -> AsyncIterator[aetcd.rpc.WatchRequest]:
        while True:
            request = await self._requests.get()
            if request is None:
                return
            yield request

    def _call(self) -> AsyncIterator[Any]:
        if self._open_call is not None:
            return self._open_call(self._request_stream())
        stub = aetcd.rpc.WatchStub(self.client.channel)
        return stub.Watch(self._request_stream(), metadata=require_leader(self.client.metadata))

    async def _run(self) -> None:
        try:
            await self.client.connect()
            async for response in self._call():
                self._dispatch(response)
            error: BaseException = aetcd.exceptions.ConnectionFailedError(
                "etcd ended the watch stream"
            )
        except asyncio.CancelledError:
            error = aetcd.exceptions.ConnectionFailedError("watch stream closed")
            self._fail_all(error)
            raise
        except Exception as exc:
            error = client_error(exc)
        self._fail_all(error)

    def _dispatch(self, response: Any) -> None:
        self._heard = asyncio.get_running_loop().time()
        if response.created:
            if not self._creating:
                return  # not ours (cannot happen on a stream of our own)
            watch = self._creating.popleft()
            watch.watch_id = response.watch_id
            if response.canceled or response.compact_revision:
                watch.fail(self._refusal(response))  # etcd dropped it already
                return
            if watch.cancelled or watch.created.done():
                self._send_cancel(response.watch_id)  # its creator gave up meanwhile
                return
            self._watches[response.watch_id] = watch
            watch.created.set_result(None)
        watch = self._watches.get(response.watch_id)
        if watch is None:
            return  # left over from a cancelled watch
        if response.canceled or response.compact_revision:
            del self._watches[response.watch_id]
            watch.fail(self._refusal(response))
            return
        for ev in response.events:
            watch.deliver(WatchEvent(KINDS[ev.type], ev.kv))

    @staticmethod
    def _refusal(response: Any) -> BaseException:
        if response.compact_revision:
            return aetcd.exceptions.RevisionCompactedError(response.compact_revision)
        reason = response.cancel_reason or "no reason given"
        return aetcd.exceptions.ClientError(f"etcd cancelled the watch: {reason}")

    def _fail_all(self, error: BaseException) -> None:
        if self.error is None:
            self.error = error
        creating, self._creating = self._creating, collections.deque()
        watches, self._watches = self._watches, {}
        for watch in [*creating, *watches.values()]:
            watch.fail(error)
        self._requests.put_nowait(None)  # ends the request stream

    async def close(self) -> None:
        task, self._task = self._task, None
        self._fail_all(aetcd.exceptions.ConnectionFailedError("watch stream closed"))
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
