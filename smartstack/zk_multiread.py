"""ZooKeeper's multi-read (3.6+): the data of many znodes in one request and one reply.

kazoo sends one request per `get` and its connection thread handles one request per turn
of its select loop (a wake-up byte, a fresh epoll, a write, a read): reading 20,000
children at a cold start is 20,000 of those turns, and the GIL hand-overs between the
loop thread queuing them and kazoo's thread sending them cost more than the reads. One
`multiRead` (opcode 22) per batch of children turns that into one turn per batch.

The server sets no watch for the reads of a multi (it drops their watch flag), so the
data watches are set with one `setWatches` request (opcode 101, what ZooKeeper's own
clients send after a reconnect) as of the multi-read's zxid: the server fires at once
for a znode changed or deleted since the read and watches the others, so nothing
between the read and the watch is missed. ``file_watches`` files the callbacks where
kazoo files a `get`'s watch, in kazoo's connection thread before it reads the next
packet; ``set_watches`` sends the request from the caller's thread. A server without
multi-read (before 3.6) answers with an error: callers fall back to one `get` (with its
watch) each.

A multi-read takes `getChildren` ops too (their watch flag is dropped as well): the
watchers' first listings at a start, which need no children watch under a persistent
recursive watch (smartstack.zk_persistent), leave as a few requests instead of one per
service.

This uses kazoo internals (``KazooClient._call``, ``_data_watchers``, ``last_zxid``),
stable since kazoo 2.0; tests/integration/synapse/test_zk_multiread.py pins them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import namedtuple
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from kazoo.client import KazooClient
from kazoo.exceptions import EXCEPTIONS, ConnectionLoss
from kazoo.protocol.paths import _prefix_root
from kazoo.protocol.serialization import (
    GetChildren,
    GetData,
    MultiHeader,
    int_struct,
    long_struct,
    multiheader_struct,
    stat_struct,
    write_string,
)
from kazoo.protocol.states import ZnodeStat

from smartstack.kazoo_inline import inline
from smartstack.logs import event

log = logging.getLogger("smartstack.zookeeper")

MULTI_READ = 22  # ZooKeeper's OpCode.multiRead
SET_WATCHES = 101  # ZooKeeper's OpCode.setWatches


GET_DATA, GET_CHILDREN = GetData.type, GetChildren.type
_OPS = {GET_DATA: GetData, GET_CHILDREN: GetChildren}


class MultiRead(namedtuple("MultiRead", "paths watch kinds", defaults=(None,))):
    """A multi-read of `getData` ops (or, per path in ``kinds``, `getData` / `getChildren`);
    the reply is, per path, (data, stat) or the children's names, or the error."""

    type = MULTI_READ
    # The connection (kazoo_conn.BulkConnection.connections) that carried it; 0: never
    # sent. A drop fails the requests still queued too: they cannot have caused it.
    sent_on = 0
    outgrown: Callable[[int], bool] | None = None  # its batcher's size check (kazoo_conn)

    def stale(self) -> bool:
        """Queued before a drop that shrank the size below its own: not to be sent."""
        return self.outgrown is not None and self.outgrown(len(self.paths))

    def serialize(self) -> bytearray:
        # kazoo's MultiHeader(kind, False, -1) + GetData/GetChildren(path, watch), written
        # directly (a start serialises 20,000 of them in kazoo's thread).
        out = bytearray()
        kinds = self.kinds or [GET_DATA] * len(self.paths)
        headers = {kind: bytes(MultiHeader(kind, False, -1).serialize()) for kind in _OPS}
        watch, pack = b"\1" if self.watch else b"\0", int_struct.pack
        for path, kind in zip(self.paths, kinds, strict=True):
            encoded = path.encode("utf-8")
            out += headers[kind]
            out += pack(len(encoded))
            out += encoded
            out += watch
        return out + multiheader_struct.pack(-1, True, -1)

    @classmethod
    def deserialize(cls, data: bytes, offset: int) -> list[Any]:
        # Struct by struct, without kazoo's per-field helpers and header tuples: a start
        # parses 20,000 records and 1,000 listings in kazoo's thread.
        results: list[Any] = []
        append = results.append
        header, header_size = multiheader_struct.unpack_from, multiheader_struct.size
        length, length_size = int_struct.unpack_from, int_struct.size
        stat, stat_size, make_stat = stat_struct.unpack_from, stat_struct.size, ZnodeStat._make
        kind, done, _ = header(data, offset)
        offset += header_size
        while done != 1:
            if kind == GET_DATA:
                (size,) = length(data, offset)
                offset += length_size
                value = None
                if size >= 0:
                    value, offset = data[offset : offset + size], offset + size
                append((value, make_stat(stat(data, offset))))
                offset += stat_size
            elif kind == GET_CHILDREN:
                (count,) = length(data, offset)
                offset += length_size
                names = []
                for _ in range(count):  # (none for -1)
                    (size,) = length(data, offset)
                    offset += length_size
                    if size >= 0:  # (-1: a null string, never a child's name)
                        names.append(data[offset : offset + size].decode("utf-8"))
                        offset += size
                append(names)
            elif kind == -1:  # this op's error (e.g. NoNode): the others still count
                (err,) = length(data, offset)
                offset += length_size
                append(EXCEPTIONS[err]())
            else:
                raise ValueError(f"unexpected op type {kind} in a multi-read reply")
            kind, done, _ = header(data, offset)
            offset += header_size
        return results


class SetWatches(namedtuple("SetWatches", "relative_zxid data_watches")):
    """Data watches on many paths in one request, as of ``relative_zxid``: the server fires
    at once for a znode changed (or gone) since then, else watches it. (ZooKeeper's own
    clients send it after a reconnect; kazoo has no such request.)"""

    type = SET_WATCHES

    def serialize(self) -> bytearray:
        out = bytearray(long_struct.pack(self.relative_zxid))
        out += int_struct.pack(len(self.data_watches))
        for path in self.data_watches:
            out += write_string(path)
        return out + int_struct.pack(0) + int_struct.pack(0)  # no exist or child watches

    @classmethod
    def deserialize(cls, data: bytes, offset: int) -> bool:
        return True  # the reply is its header only


def full_path(chroot: str, path: str) -> str:
    """kazoo's ``_prefix_root``, at once for the usual case: no chroot and a path already
    normal (a start reads 20,000 children: kazoo's split-and-join of each adds up)."""
    # ("/.": a "." or ".." component, or a name starting with a dot: kazoo's way then)
    if not chroot and path[:1] == "/" and path[-1:] != "/" and "//" not in path:
        return path if "/." not in path else _prefix_root(chroot, path)
    return _prefix_root(chroot, path)


def start_multi_read(
    client: KazooClient,
    paths: Sequence[str],
    kinds: Sequence[int] | None = None,
    outgrown: Callable[[int], bool] | None = None,
) -> tuple[MultiRead, Any]:
    """Queue a multi-read of ``paths`` on ``client`` (`getData` each, or per ``kinds``);
    the request and its kazoo async result (failed with ``Outgrown``, unsent, if
    ``outgrown(paths)`` says so when its turn comes)."""
    result = client.handler.async_result()
    chroot = client.chroot
    full = [full_path(chroot, path) for path in paths]
    # (a multi's reads set no watch anyway)
    request = MultiRead(full, False, list(kinds) if kinds else None)
    request.outgrown = outgrown
    client._call(request, result)
    return request, result


class ReadWatches(NamedTuple):
    """The data watches a multi-read asks for: filed, to be set as of ``zxid``."""

    zxid: int
    paths: list[str]


def file_watches(
    client: KazooClient, paths: Sequence[str], replies: Sequence[Any], watch: Callable[..., Any]
) -> ReadWatches:
    """File ``watch`` where kazoo files a `get`'s watch, for every path read without an
    error. Call in kazoo's connection thread from the multi-read result's (inline)
    callback: ``client.last_zxid`` is then that reply's zxid. It sends nothing: kazoo's
    thread must never wait on its own wake-up socket (full when many requests queue)."""
    read = []
    for path, reply in zip(paths, replies, strict=True):
        if not isinstance(reply, Exception):
            full = full_path(client.chroot, path)
            client._data_watchers[full].add(watch)
            read.append(full)
    return ReadWatches(client.last_zxid, read)


def set_watches(client: KazooClient, filed: ReadWatches) -> None:
    """Ask the server for the filed watches, as of the read (from the caller's thread)."""
    if filed.paths and not client._stopped.is_set():
        client._call(SetWatches(filed.zxid, filed.paths), client.handler.async_result())


class _Part(NamedTuple):
    paths: list[str]
    watch: Callable[..., Any] | None
    future: asyncio.Future[list[Any]]
    kind: int = GET_DATA

    @property
    def weight(self) -> int:
        """Its share of a request's MAX_PATHS: a listing's reply is tens of names."""
        return len(self.paths) * (LIST_WEIGHT if self.kind == GET_CHILDREN else 1)


LIST_WEIGHT = 16  # a listing counts as this many reads in a request (a reply ~1 MB at most)
# A request larger than the server's jute.maxbuffer is answered by closing the connection:
# sent again after the reconnect, it closed it again, for ever (one service's 512 reads of
# 80-byte paths, 42 KB, under jute.maxbuffer=8192: never listed, a reconnect every ~1.3 s).
# After a drop under a multi-read, requests carry a quarter of its paths at most (down to
# one path), for SHRUNK_FOR seconds after the last such drop.
# A drop fails every multi-read pending, small ones too: one no larger (path bytes) than
# one the server answered was not over its limit and shrinks nothing (a 4-path read pending
# at a plain restart left 1 path per request for 5 minutes: a relist of 1,000 services x 20
# children in 21,000 requests, 3.3 s, instead of 18 in 0.2 s; review s36 cr-looks).
# The server reads requests in order and closes at the first over its limit: one drop
# shrinks the size once, by the largest multi-read it failed of those sent on that
# connection (never one still queued: it never reached the server). Before, each failed
# read shrank it again: on a loaded 2-core CI run one drop took it from 2,048 paths to 1,
# the retries failing with it; and a small read sent just ahead of the one over the limit
# loses its answer with the drop too (review s43 cr-zkdrop). A multi-read queued before the
# drop and still waiting for the next connection is sent again in pieces of the new size
# (``Outgrown``): sent whole, it dropped that connection too.
SHRUNK_FOR = 300.0


class Outgrown(Exception):
    """Kazoo's thread did not send a multi-read queued before a drop shrank the size:
    the batcher sends its reads again, in pieces (never seen by its callers)."""


def _chain(source: asyncio.Future[list[Any]], target: asyncio.Future[list[Any]]) -> None:
    def _copy(done: asyncio.Future[list[Any]]) -> None:
        if target.done():
            return
        if done.cancelled():
            target.cancel()
        elif done.exception() is not None:
            target.set_exception(done.exception())  # type: ignore[arg-type]
        else:
            target.set_result(done.result())

    source.add_done_callback(_copy)


async def _joined(pieces: list[asyncio.Future[list[Any]]]) -> list[Any]:
    return [reply for piece in await asyncio.gather(*pieces) for reply in piece]


class ReadBatcher:
    """Multi-reads asked for in the same turn of the event loop leave as one request.

    At a cold start every service's watcher reads its children at about the same time:
    a thousand multi-reads would still be a thousand turns of kazoo's loop; together they
    are one per MAX_PATHS znodes. The watches they ask for go in one setWatches.
    """

    MAX_PATHS = 2048  # znodes per request (a reply of records of a few hundred bytes each)

    def __init__(
        self, client: KazooClient, loop: asyncio.AbstractEventLoop, hosts: str = ""
    ) -> None:
        self.client, self.loop, self.hosts = client, loop, hosts
        self._queued: list[_Part] = []
        self._cap, self._dropped_at = self.MAX_PATHS, 0.0  # paths per request (see SHRUNK_FOR)
        self._answered = 0  # path bytes of the largest multi-read the server answered
        # The drop being judged (its connection), the largest multi-read it failed, the
        # size before it: of those it failed, the largest sent decides (see SHRUNK_FOR).
        self._judged_drop, self._judged_paths, self._cap_at_drop = 0, 0, self.MAX_PATHS

    @property
    def max_paths(self) -> int:
        if self._cap < self.MAX_PATHS and time.monotonic() - self._dropped_at > SHRUNK_FOR:
            self._cap = self.MAX_PATHS  # no drop for a while: the full size is tried again
        return self._cap

    def _dropped(self, paths: list[str], sent_on: int) -> None:
        """A drop failed this multi-read (sent on connection ``sent_on``; 0: never sent):
        maybe it was over the server's limit."""
        size, path_bytes = len(paths), sum(len(p) for p in paths)
        if not sent_on or size < 2 or path_bytes <= self._answered:
            return  # (never reached the server, one path, or no larger than one answered)
        if sent_on != self._judged_drop:  # this drop's first: the size as the drop found it
            self._judged_drop, self._judged_paths = sent_on, 0
            self._cap_at_drop = self.max_paths
        if size <= self._judged_paths:
            return  # (one as large of this drop was judged)
        self._judged_paths, self._dropped_at = size, time.monotonic()
        cap = min(self._cap_at_drop, max(1, size // 4))
        if cap != self._cap:
            self._cap = cap
            event(log, "zk_multi_read_dropped", logging.WARNING, hosts=self.hosts,
                  paths=size, path_bytes=path_bytes, next_max_paths=cap)  # fmt: skip

    def _outgrown(self, size: int) -> bool:
        """A request of ``size`` paths no longer fits (a drop since it was queued shrank
        the size). Called from kazoo's thread, before it sends the request."""
        return size > self._cap

    def read(
        self, paths: Sequence[str], watch: Callable[..., Any] | None, kind: int = GET_DATA
    ) -> asyncio.Future[list[Any]]:
        """The (data, stat) or the error of every path, with ``watch`` set on those read;
        with ``kind`` GET_CHILDREN, the children's names (never watched) or the error."""
        cap = self.max_paths
        if len(paths) > cap:  # one request each piece, the replies joined in order
            pieces = [self.read(paths[i : i + cap], watch, kind) for i in range(0, len(paths), cap)]
            return self.loop.create_task(_joined(pieces))
        future: asyncio.Future[list[Any]] = self.loop.create_future()
        self._queued.append(_Part(list(paths), watch, future, kind))
        if len(self._queued) == 1:
            self.loop.call_soon(self._flush)
        return future

    def _flush(self) -> None:
        parts, self._queued = self._queued, []
        chunk: list[_Part] = []
        weight = 0
        for part in parts:
            if chunk and weight + part.weight > self.max_paths:
                self._send(chunk)
                chunk, weight = [], 0
            chunk.append(part)
            weight += part.weight
        if chunk:
            self._send(chunk)

    def _send(self, parts: list[_Part]) -> None:
        client, loop = self.client, self.loop
        paths = [path for part in parts for path in part.paths]
        kinds = None  # getData only, else the op of every path
        if any(part.kind != GET_DATA for part in parts):
            kinds = [part.kind for part in parts for _ in part.paths]
        filed: list[ReadWatches] = []
        request: MultiRead | None = None

        @inline  # in kazoo's connection thread: file the watches before the next packet
        def _done(result: Any) -> None:
            sent_on = request.sent_on if request is not None else 0  # (as the drop left it)
            try:
                replies = result.get_nowait()
                if len(replies) != len(paths):
                    raise ValueError(f"{len(replies)} answers to {len(paths)} reads")
                start = 0
                for part in parts:
                    mine = replies[start : start + len(part.paths)]
                    start += len(part.paths)
                    if part.watch is not None and not client._stopped.is_set():
                        filed.append(file_watches(client, part.paths, mine, part.watch))
            except Exception as exc:
                loop.call_soon_threadsafe(_settle, None, exc, sent_on)
            else:
                loop.call_soon_threadsafe(_settle, replies, None, sent_on)

        def _settle(replies: list[Any] | None, exc: BaseException | None, sent_on: int) -> None:
            if isinstance(exc, Outgrown):
                for part in parts:
                    if not part.future.done():
                        _chain(self.read(part.paths, part.watch, part.kind), part.future)
                return
            if isinstance(exc, ConnectionLoss):
                self._dropped(paths, sent_on)
            elif replies is not None:
                self._answered = max(self._answered, sum(len(p) for p in paths))
            if filed:
                set_watches(client, ReadWatches(filed[0].zxid, [p for f in filed for p in f.paths]))
            start = 0
            for part in parts:
                if not part.future.done():
                    if replies is None:
                        part.future.set_exception(exc or RuntimeError("no answer"))
                    else:
                        part.future.set_result(list(replies[start : start + len(part.paths)]))
                start += len(part.paths)

        try:
            request, result = start_multi_read(client, paths, kinds, self._outgrown)
            result.rawlink(_done)
        except Exception as exc:  # e.g. SessionExpiredError raised at once
            _settle(None, exc, 0)
