"""Many etcd prefix listings in few calls: one transaction of range reads per batch.

A synapse that starts with a thousand etcd services would otherwise send a thousand range
calls at once, each a gRPC call with its own future, deadline and reply on the event loop.
Listings asked for while another batch is in flight (or in the same loop turn) are sent
together in one ``Txn`` of up to ``max_ops`` ranges. A transaction reads every range at
one revision, so each listing still has a revision to watch from, and each reads exactly
its own prefix (no neighbour's keys). etcd refuses transactions with more than
``--max-txn-ops`` operations (default 128), and gRPC replies above the client's receive
limit; a batch refused for either is split in two, down to single calls.

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

from smartstack.logs import event

log = logging.getLogger("smartstack.etcd")

MAX_OPS = 128  # etcd's default --max-txn-ops
IN_FLIGHT = 2  # transactions at once: the next batch is read while one is decoded
# What etcd / gRPC answer for a transaction that is too large (too many operations, or a
# reply above the receive limit): smaller batches will do.
TOO_LARGE = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED)


@dataclass(slots=True)
class Listing:
    """The key-values under one prefix (protobuf ``KeyValue``s) at ``revision``."""

    kvs: Sequence[Any]
    revision: int


@dataclass(slots=True)
class _Ask:
    """One queued read: its range request, what to make of the reply, who waits."""

    request: aetcd.rpc.RangeRequest
    finish: Callable[[Any, int], Any]  # (RangeResponse, revision) -> the answer
    future: asyncio.Future[Any]


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
    """Prefix listings and fingerprints batched into transactions, on one etcd connection."""

    def __init__(self, call: Caller, timeout: float, max_ops: int = MAX_OPS) -> None:
        self._call = call
        self.timeout = timeout
        self.max_ops = max_ops  # lowered for good when etcd refuses a batch as too large
        self._queue: list[_Ask] = []
        self._running = 0
        self._tasks: set[asyncio.Task[None]] = set()  # referenced while they run
        self.calls = 0  # registry calls made (a transaction or a single range each)

    async def list(self, prefix: bytes) -> Listing:
        return await self._ask(range_request(prefix), _listing)

    async def fingerprint(self, prefix: bytes) -> tuple[int, int]:
        """(number of keys, newest mod revision) under ``prefix``: see ``fingerprint``."""
        return await self._ask(fingerprint_request(prefix), fingerprint)

    async def _ask(self, request: aetcd.rpc.RangeRequest, finish: Callable[[Any, int], Any]):
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append(_Ask(request, finish, future))
        if self._running < IN_FLIGHT:
            self._running += 1
            asyncio.get_running_loop().call_soon(self._start)  # gather this loop turn's asks
        return await future

    def _start(self) -> None:
        task = asyncio.ensure_future(self._drain())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue[: self.max_ops], self._queue[self.max_ops :]
                batch = [ask for ask in batch if not ask.future.done()]  # asker gave up
                if batch:
                    await self._read(batch)
        finally:
            self._running -= 1

    async def _read(self, batch: list[_Ask]) -> None:
        requests = [ask.request for ask in batch]
        self.calls += 1
        try:
            replies, revision = await self._call(lambda c: _read(c, requests), self.timeout)
        except Exception as exc:
            if len(batch) > 1 and _too_large(exc):
                self.max_ops = max(1, len(batch) // 2)
                event(log, "etcd_batch_reduced", level=logging.WARNING, ops=self.max_ops,
                      error=str(exc)[:200])  # fmt: skip
                half = len(batch) // 2
                await self._read(batch[:half])
                await self._read(batch[half:])
                return
            for ask in batch:
                if not ask.future.done():
                    ask.future.set_exception(exc)
            return
        for ask, reply in zip(batch, replies, strict=True):
            if not ask.future.done():
                ask.future.set_result(ask.finish(reply, revision))
