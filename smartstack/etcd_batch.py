"""Many etcd prefix listings in few calls: one transaction of range reads per batch.

A synapse that starts with a thousand etcd services would otherwise send a thousand range
calls at once, each a gRPC call with its own future, deadline and reply on the event loop.
Listings asked for while another batch is in flight (or in the same loop turn) are sent
together in one ``Txn`` of up to ``max_ops`` ranges. A transaction reads every range at
one revision, so each listing still has a revision to watch from, and each reads exactly
its own prefix (no neighbour's keys). etcd refuses transactions with more than
``--max-txn-ops`` operations (default 128), and gRPC replies above the client's receive
limit; a batch refused for either is split in two, down to single calls (see
``BatchLister`` for timeouts and how the batch size recovers).

The watchers' consistency checks (a prefix's key count and newest revision) go the same
way: a connection's watchers check on a shared tick, so a thousand checks are a few
transactions, not a thousand calls each needing its own read barrier in etcd.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import aetcd
import aetcd.client
import aetcd.exceptions
import aetcd.rpc
import aetcd.utils
import grpc

from smartstack.etcd_events import Listing
from smartstack.logs import event

log = logging.getLogger("smartstack.etcd")

MAX_OPS = 128  # etcd's default --max-txn-ops
IN_FLIGHT = 2  # transactions at once: the next batch is read while one is decoded
GROW_AFTER = 16  # batches read in a row before a lowered max_ops doubles again
# What etcd / gRPC answer for a transaction that is too large (too many operations, or a
# reply above the receive limit): smaller batches will do.
TOO_LARGE = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED)


@dataclass(slots=True)
class _Ask:
    """One queued read: its range request, what to make of the reply, who waits, by when."""

    request: aetcd.rpc.RangeRequest
    finish: Callable[[Any, int], Any]  # (RangeResponse, revision) -> the answer
    future: asyncio.Future[Any]
    deadline: float  # loop time: the asker's own timeout, queueing included


class Caller(Protocol):
    """``EtcdConnection.with_client``: a call on the current client, with fail-over."""

    def __call__(
        self, fn: Callable[[aetcd.Client], Awaitable[Any]], timeout: float | None = None
    ) -> Awaitable[Any]: ...


def range_request(prefix: bytes) -> aetcd.rpc.RangeRequest:
    return aetcd.rpc.RangeRequest(key=prefix, range_end=aetcd.utils.prefix_range_end(prefix))


def fingerprint_request(prefix: bytes) -> aetcd.rpc.RangeRequest:
    """The newest key under ``prefix`` by mod revision, no value; the reply counts them all."""
    return aetcd.rpc.RangeRequest(
        key=prefix,
        range_end=aetcd.utils.prefix_range_end(prefix),
        limit=1,
        keys_only=True,
        sort_order=aetcd.rpc.RangeRequest.DESCEND,
        sort_target=aetcd.rpc.RangeRequest.MOD,
    )


def fingerprint(reply: Any, revision: int = 0) -> tuple[int, int]:
    """(number of keys, highest mod_revision among them) from a ``fingerprint_request``'s
    reply. Any change since a known state moves one of the two: a create or an update
    raises the highest revision, a delete alone lowers the count."""
    return reply.count, (reply.kvs[0].mod_revision if reply.kvs else 0)


def _listing(reply: Any, revision: int) -> Listing:
    return Listing(reply.kvs, revision)


@aetcd.client._handle_errors  # gRPC errors as aetcd's exceptions, as for its own calls
async def _read(client: aetcd.Client, requests: Sequence[aetcd.rpc.RangeRequest]) -> tuple:
    """(range replies, revision): one Range call for one request, else one transaction."""
    await client.connect()
    if len(requests) == 1:
        reply = await client.kvstub.Range(
            requests[0], timeout=client._timeout, metadata=client.metadata
        )
        return [reply], reply.header.revision
    ops = [aetcd.rpc.RequestOp(request_range=r) for r in requests]
    reply = await client.kvstub.Txn(
        aetcd.rpc.TxnRequest(success=ops), timeout=client._timeout, metadata=client.metadata
    )
    return [r.response_range for r in reply.responses], reply.header.revision


def _too_large(exc: BaseException) -> bool:
    cause = exc.__cause__ or exc.__context__
    code = cause.code() if isinstance(cause, grpc.aio.AioRpcError) else None
    return code in TOO_LARGE


class BatchLister:
    """Prefix listings and fingerprints batched into transactions, on one etcd connection.

    Every ask carries its own timeout: a batch is called with the time its most pressed
    member has left, and a batch that times out fails only the members out of time; the
    others are read again in halves. A batch refused as too large is split in halves too,
    and ``max_ops`` drops to the largest part etcd then accepted (one oversized prefix
    fails alone and does not pin it at 1); after ``GROW_AFTER`` batches read in a row it
    doubles again, up to ``MAX_OPS``, so a passing refusal does not shrink batches for good.
    """

    def __init__(self, call: Caller, max_ops: int = MAX_OPS) -> None:
        self._call = call
        self.max_ops = max_ops
        self._limit = max_ops  # what max_ops grows back to
        self._streak = 0  # batches read in a row since max_ops last changed
        self._warned = max_ops + 1  # the lowest max_ops logged as a warning (once per size)
        self._queue: list[_Ask] = []
        self._running = 0
        self._tasks: set[asyncio.Task[None]] = set()  # referenced while they run
        self.calls = 0  # registry calls made (a transaction or a single range each)

    async def list(self, prefix: bytes, timeout: float) -> Listing:
        return await self._ask(range_request(prefix), _listing, timeout)

    async def fingerprint(self, prefix: bytes, timeout: float) -> tuple[int, int]:
        """(number of keys, newest mod revision) under ``prefix``: see ``fingerprint``."""
        return await self._ask(fingerprint_request(prefix), fingerprint, timeout)

    async def _ask(
        self, request: aetcd.rpc.RangeRequest, finish: Callable[[Any, int], Any], timeout: float
    ) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append(_Ask(request, finish, future, loop.time() + timeout))
        if self._running < IN_FLIGHT:
            self._running += 1
            loop.call_soon(self._start)  # gather this loop turn's asks
        # Our own bound, whatever the batch we are in is waiting for.
        return await asyncio.wait_for(future, timeout)

    def _start(self) -> None:
        task = asyncio.ensure_future(self._drain())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue[: self.max_ops], self._queue[self.max_ops :]
                await self._read(batch)
        finally:
            self._running -= 1

    @staticmethod
    def _pending(batch: list[_Ask]) -> list[_Ask]:
        """The asks still waiting and in time (those out of time fail with TimeoutError)."""
        now = asyncio.get_running_loop().time()
        kept = []
        for ask in batch:
            if ask.future.done():
                continue  # the asker gave up
            if ask.deadline <= now:
                ask.future.set_exception(TimeoutError("etcd listing timed out"))
                continue
            kept.append(ask)
        return kept

    async def _read(self, batch: list[_Ask], whole: bool = True) -> int:
        """Read ``batch``; the size of the largest part of it read (0: none was).
        ``whole``: a batch as drained, not a part of a split one."""
        batch = self._pending(batch)
        if not batch:
            return 0
        requests = [ask.request for ask in batch]
        now = asyncio.get_running_loop().time()
        timeout = min(ask.deadline for ask in batch) - now
        self.calls += 1
        try:
            replies, revision = await self._call(lambda c: _read(c, requests), timeout)
        except Exception as exc:
            if len(batch) > 1 and isinstance(exc, TimeoutError):
                return await self._split(self._pending(batch))  # the late fail, others retry
            if len(batch) > 1 and _too_large(exc):
                read = await self._split(batch)
                if whole:  # once the split is done: its parts refused, too, say less
                    self._shrink(read, exc)
                return read
            for ask in batch:
                if not ask.future.done():
                    ask.future.set_exception(exc)
            return 0
        for ask, reply in zip(batch, replies, strict=True):
            if not ask.future.done():
                ask.future.set_result(ask.finish(reply, revision))
        self._grow()
        return len(batch)

    async def _split(self, batch: list[_Ask]) -> int:
        half = len(batch) // 2
        first = await self._read(batch[:half], whole=False)
        return max(first, await self._read(batch[half:], whole=False))

    def _shrink(self, read: int, exc: BaseException) -> None:
        """Batches of at most ``read`` (what etcd accepted after refusing a larger one)."""
        if 0 < read < self.max_ops:
            self.max_ops, self._streak = read, 0
            # A limit found again after growing back is not news: info, not a warning.
            level = logging.WARNING if read < self._warned else logging.INFO
            self._warned = min(self._warned, read)
            event(log, "etcd_batch_reduced", level=level, ops=read, error=str(exc)[:200])

    def _grow(self) -> None:
        self._streak += 1
        if self._streak >= GROW_AFTER and self.max_ops < self._limit:
            self.max_ops, self._streak = min(self._limit, self.max_ops * 2), 0
