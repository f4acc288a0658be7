"""What every etcd transport hands the watcher, free of gRPC: events, listings, a watch's
queue of events, the watchers' shared check tick, and the errors a watch ends with.

Synapse reaches etcd over gRPC (``smartstack.etcd``: one stream for many watches) or over
etcd's JSON gateway (``smartstack.etcd_json``: a sidecar watching a few services does not
load gRPC, ~17 MB of RSS). Both give the watcher these types, so it needs neither.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from smartstack.etcd_wake import RecoveryWake
from smartstack.logs import FailureStreak
from smartstack.registry_address import etcd_endpoint

if TYPE_CHECKING:
    from smartstack.registry_auth import EtcdTLS

log = logging.getLogger("smartstack.etcd")

# Events a watch holds for its consumer (~1 kB each with the record): beyond, it is dropped.
MAX_PENDING = 20_000
KINDS = ("PUT", "DELETE")  # by etcd's Event.EventType number
# gRPC metadata (clientv3's WithRequireLeader) on our streams: a member that lost its leader
# refuses them, and ends those open once it has had none for 3 election timeouts. A member
# cut off from its peers still answers: without this its watches stay silent for ever.
REQUIRE_LEADER = ("hasleader", "true")


class WatchEvent(NamedTuple):
    """A watch event: ``kind`` ("PUT", "DELETE") and ``kv``, etcd's KeyValue (``key`` and
    ``value`` bytes, ``mod_revision``, ``create_revision``): gRPC's message as it came, or
    ``smartstack.etcd_json.JsonKV``."""

    kind: str
    kv: Any


@dataclass(slots=True)
class Listing:
    """The key-values under one prefix at ``revision``."""

    kvs: Sequence[Any]
    revision: int


class WatchOverflow(Exception):
    """More events waited than ``MAX_PENDING``: they were dropped and the watch cancelled.
    The watcher lists again (from scratch) and watches from that listing's revision."""


class WatchCompacted(Exception):
    """etcd compacted the revision a watch asked to start from (JSON gateway; gRPC raises
    aetcd's ``RevisionCompactedError``, with the same attribute)."""

    def __init__(self, compacted_revision: int) -> None:
        super().__init__(f"etcd compacted revision {compacted_revision}")
        self.compacted_revision = compacted_revision


class EventQueue:
    """A watch's events for its consumer: iterate it for ``WatchEvent``s, or ``batches()``
    for every event waiting at once; either raises when the watch failed. At most
    ``max_pending`` events wait: a burst beyond that (a consumer far behind on a big prefix)
    fails the watch with ``WatchOverflow`` rather than holding them all in memory.
    ``_detach()`` is the transport's: stop sending this watch's events."""

    def __init__(self, max_pending: int = MAX_PENDING) -> None:
        self.max_pending = max_pending
        # Both made when needed: a deque and an Event are ~1.3 kB per watch, and a
        # thousand watches are mostly idle (issue 15).
        self._pending: collections.deque[WatchEvent] | None = None
        self._ready: asyncio.Future[None] | None = None  # the taker waits on it
        self._ended = False  # no event comes after the pending ones
        self._error: BaseException | None = None  # raised once the pending ones are taken
        self.cancelled = False

    def _detach(self) -> None:
        """Overridden by the transport."""

    def __aiter__(self) -> AsyncIterator[WatchEvent]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[WatchEvent]:
        while events := await self._take(1):
            yield events[0]

    async def batches(self) -> AsyncIterator[list[WatchEvent]]:
        """Every event waiting, in order, as one list: a burst is one list, not one wake-up
        (and, for the watcher, one report) per event."""
        while events := await self._take(None):
            yield events

    async def _take(self, limit: int | None) -> list[WatchEvent]:
        while not self._pending:
            if self._ended:
                if self._error is not None:
                    raise self._error
                return []
            self._ready = asyncio.get_running_loop().create_future()
            try:
                await self._ready
            finally:
                self._ready = None
        pending = self._pending
        if limit is None or limit >= len(pending):
            self._pending = None  # all taken: the deque goes too
            return list(pending)
        return [pending.popleft() for _ in range(limit)]

    def _wake(self) -> None:
        if self._ready is not None and not self._ready.done():
            self._ready.set_result(None)

    def deliver(self, event: WatchEvent) -> None:
        if self._ended:
            return
        if self._pending is None:
            self._pending = collections.deque()
        elif len(self._pending) >= self.max_pending:
            self._pending = None  # the watcher lists anew: these are of no use any more
            self._end(WatchOverflow(f"more than {self.max_pending} etcd events waiting"))
            self._detach()
            return
        self._pending.append(event)
        self._wake()

    def _end(self, error: BaseException | None) -> None:
        if not self._ended:
            self._ended, self._error = True, error
            self._wake()

    async def cancel(self) -> None:
        if not self.cancelled:
            self.cancelled = True
            self._end(None)
            self._detach()


def split_endpoint(endpoint: str) -> tuple[str, int]:
    """'host:port' or 'http://host:port' -> (host, port); ValueError for anything else
    ('a:2379,b:2379' was host 'a:2379,b'): a config's endpoints were checked so at load."""
    return etcd_endpoint(endpoint)


class CheckTicks:
    """The consistency-check tick a connection's watchers share, every ``interval`` seconds
    (jittered): their checks go out together, in few calls."""

    _tick: asyncio.Future[None] | None = None

    async def next_check(self, interval: float) -> None:
        """Wait for the connection's next tick."""
        await asyncio.shield(self._next_tick(interval))

    def after_next_check(self, interval: float, callback: Callable[[Any], object]) -> None:
        """``callback(tick)`` on the loop at the next tick: a watcher between checks holds a
        callback there, not a task waiting (~1.3 kB a service)."""
        self._next_tick(interval).add_done_callback(callback)

    def _next_tick(self, interval: float) -> asyncio.Future[None]:
        tick = self._tick
        if tick is None or tick.done():
            loop = asyncio.get_running_loop()
            tick = self._tick = loop.create_future()
            loop.call_later(interval * random.uniform(0.75, 1.25), _resolve, tick)
        return tick


class Endpoints(CheckTicks):
    """A connection's endpoints (failed over in turn), identity, timeout and TLS.

    ``start``: the endpoint used first; None (a daemon's) picks one at random, so that the
    daemons of a fleet spread over the members instead of all loading the first."""

    def __init__(
        self,
        endpoints: list[str],
        username: str | None = None,
        password: str | None = None,
        timeout: float = 3.0,
        tls: EtcdTLS | None = None,
        start: int | None = None,
    ) -> None:
        if not endpoints:
            raise ValueError("etcd needs at least one endpoint")
        self.endpoints = list(endpoints)
        self.username = username
        self.password = password
        self.timeout = timeout
        self.tls = tls  # None: clear text; never a fallback from TLS
        self._index = random.randrange(len(self.endpoints)) if start is None else start
        self.failovers = 0
        # Every failed call rotates: an outage is logged when it starts and when it ends.
        self._outage = FailureStreak(log, "etcd_failover", "etcd_recovered")
        # Watchers sleeping their backoff are woken when the connection answers again.
        self.wake = RecoveryWake(self._wake_probe)

    async def _wake_probe(self) -> object:
        """One small call that proves the connection answers (the transport's)."""
        raise NotImplementedError

    def _answered(self, started: float) -> None:
        """A call (``started`` at this ``time.monotonic()``) was answered: an outage under
        way ends; if it was answered promptly, the watchers sleeping their backoff wake."""
        if self._outage.since is not None:
            self._outage.success(endpoint=self.current_endpoint)
        self.wake.answered(time.monotonic() - started <= self.timeout / 2)

    @property
    def current_endpoint(self) -> str:
        return self.endpoints[self._index]

    def _next_endpoint(self, reason: str) -> None:
        self._index = (self._index + 1) % len(self.endpoints)
        self.failovers += 1
        # With one endpoint there is no other to name: the next call connects to it anew.
        where = "next" if len(self.endpoints) > 1 else "reconnect"
        self._outage.failure(reason, **{where: self.current_endpoint})
        self.wake.failed()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
