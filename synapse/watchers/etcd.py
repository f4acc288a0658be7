"""etcd v3 watcher: every key under ``discovery.path`` is one nerve record.

One prefix read gives the full list and its revision; a prefix watch from the
next revision then delivers every change with its value, so no further reads
are needed. Over gRPC (``smartstack.etcd``), the watchers of one connection list together
(one transaction for many prefixes, ``smartstack.etcd_batch``) and share one watch stream
(``smartstack.etcd_watch``); over etcd's JSON gateway (``smartstack.etcd_json``, a sidecar's
few services: no gRPC loaded) each lists in one call and watches on a connection of its own.
When the watch dies (etcd restarted, endpoint lost, stream ended, revision
compacted) the watcher lists again and resumes, with jittered backoff between
failed attempts, ended early (after ``relist_jitter``) when the connection answers again
(smartstack.etcd_wake); the last known list stays in force meanwhile.

Should etcd drop a watch without a word, it would just never deliver again. So while
a watch runs, the prefix's (count, newest revision) is checked every ``RESYNC_INTERVAL``
(jittered); if it differs from what the watch delivered, or the connection has failed over
from the endpoint the watch was made on, the watch is dropped and the watcher lists and
watches anew. One small range read (one key, no values) per service and interval, whatever
the size of the service; the watchers of a connection check on a shared tick, so their
reads go out together in a few transactions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

from smartstack import etcd_wake
from smartstack.backoff import Backoff
from smartstack.etcd_events import Listing, WatchOverflow
from smartstack.logs import event
from smartstack.record import InvalidRecord, decode_nerve, decode_serverset, etcd_prefix
from smartstack.tasks import cancel_and_wait
from synapse.model import Found
from synapse.watchers.base import Entry, Watcher
from synapse.watchers.etcd_outage import WatchOutage, outage_of
from synapse.watchers.record_notes import note_ignored

if TYPE_CHECKING:  # gRPC is loaded only by a connection that uses it (etcd_transport)
    from smartstack.etcd import EtcdConnection
    from smartstack.etcd_json import EtcdJsonConnection

log = logging.getLogger("synapse.watchers.etcd")

RESYNC_INTERVAL = 120.0  # seconds between consistency checks of a live watch
# Listing a large service may take longer than an ordinary call (the bound includes the
# wait behind other services' listings: smartstack.etcd_batch).
LIST_TIMEOUT = 30.0


ORIGIN = "etcd:"  # a record's origin: this and its key


def _version(record: Found | Entry) -> int | None:
    """A known record's mod revision: a Found's is its create revision (never modified)."""
    return record.sequence if type(record) is Found else record.version


class _WatchStale(Exception):
    """The consistency check found changes the watch never delivered."""


class EtcdWatcher(Watcher):
    method = "etcd"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.prefix = etcd_prefix(self.discovery.path)
        self.conn: EtcdConnection | EtcdJsonConnection | None = None
        # Keyed by origin ("etcd:" + key): the reports' Found.origin is the key string
        # itself, not a second copy per record (~90 bytes a server at 1,000 x 20). A record
        # never modified since it was created is kept as the Found its reports carry (its
        # version is its create revision, the Found's sequence): one object per server, not
        # an Entry and a Found (~1.3 MB at 1,000 x 20). A modified or refused one is an Entry.
        self._keys: dict[str, Found | Entry] = {}
        self._watch = None
        self._client = None
        self._streaming = False  # iterating a live watch (vs. listing / creating it)
        self._checking: asyncio.Future[None] | None = None  # a consistency check under way
        self._stale = False  # the check found the live watch silent
        self._made_at = 0  # the connection's failovers when the live watch was made
        self.revision: int | None = None
        self.relists = 0
        self.stale_watches = 0  # watches the consistency check found silent
        self.overflows = 0  # watches dropped for a burst of events beyond MAX_PENDING
        # Lost watches are logged per connection (all its services lose theirs together).
        self._outage: WatchOutage | None = None

    async def run(self) -> None:
        factory = self.ctx.etcd_connection
        assert factory is not None
        self.conn = factory(self.discovery)
        outage = self._outage = outage_of(self.conn)
        policy = self.discovery.retry_policy
        backoff = Backoff(policy.base_interval, policy.max_interval)
        woken_at, held = -etcd_wake.WAKE_SETTLE, 0  # the last early wake; backoff.attempt then
        while True:
            try:
                await self._list_and_watch(backoff)
            except self.conn.compacted_errors as exc:
                # We fell behind compaction: nothing to wait for, list again at once.
                event(log, "etcd_watch_compacted", level=logging.WARNING, service=self.service,
                      compacted=exc.compacted_revision)  # fmt: skip
                continue
            except _WatchStale:
                self.stale_watches += 1
                continue  # the check logged it; list again at once
            except WatchOverflow as exc:
                # A burst beyond what a watch holds: listing from scratch is what the
                # dropped events would have come to (the watch resumes from its revision).
                self.overflows += 1
                event(log, "etcd_watch_overflow", level=logging.WARNING, service=self.service,
                      error=str(exc))  # fmt: skip
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.set_connected(False, f"{type(exc).__name__}: {str(exc)[:200]}")
                outage.failure(self, self.service, self.last_error or "watch failed")
                if self._streaming and isinstance(exc, self.conn.connection_errors):
                    # The stream broke (with_client already rotates for failed calls; a
                    # stream that stops answering is abandoned by the next creation on gRPC,
                    # by the connection's status probe on the JSON gateway). All watches of
                    # a client fail together: it is replaced once, not per watcher.
                    await self.conn.rotate(self.last_error or "watch failed", self._client)
            else:
                self.set_connected(False, "etcd watch ended")
            loop = asyncio.get_running_loop()
            if loop.time() - woken_at < etcd_wake.WAKE_SETTLE:
                # Lost again soon after an early wake (a flapping member): the backoff runs
                # on from where that wake cut it, and sleeps to its end.
                backoff.attempt = max(backoff.attempt, held)
                await asyncio.sleep(backoff.next())
            # Ended early, after relist_jitter, when the connection answers again.
            elif await self.conn.wake.sleep(backoff.next(), self.discovery.relist_jitter):
                woken_at, held = loop.time(), backoff.attempt

    async def _list_and_watch(self, backoff: Backoff) -> None:
        assert self.conn is not None
        prefix = self.prefix.encode()
        started = time.monotonic()
        self._streaming = False
        # Batched with the other services' listings (one transaction for many prefixes).
        self._load(await self.conn.list_prefix(prefix, LIST_TIMEOUT))
        self.metrics.registry_reads.labels(self.service, self.method).inc()
        self.relists += 1
        self._report(started)
        # On the connection's one watch stream, created without waiting for the others'
        # (smartstack.etcd_watch), which is abandoned if it stops answering.
        made_at = self.conn.failovers  # (before: a failover while it is made counts)
        watch = await self.conn.watch_prefix(prefix, self.revision + 1)
        self._watch = watch
        self._client = getattr(watch, "client", None)  # the client whose stream carries it
        self._made_at = made_at
        self.set_connected(True)
        assert self._outage is not None
        self._outage.success(self)
        backoff.reset()
        self._streaming = True
        self._stale = False
        self.conn.after_next_check(RESYNC_INTERVAL, self._on_tick)  # with the others'
        try:
            # Every event waiting at once, and one report for them: a burst on a big prefix
            # is not a full list sorted and sent to the reconciler per event.
            async for events in watch.batches():
                self._apply(events)
                del events  # not kept until the next batch (see _load)
        finally:
            self._watch = None  # _streaming stays set: run() asks whether the stream broke
            checking, self._checking = self._checking, None
            await cancel_and_wait(checking)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(watch.cancel(), 2)
        if self._stale:
            raise _WatchStale()

    def _on_tick(self, _tick: object) -> None:
        """The connection's check tick: check the live watch (a tick armed for an earlier
        watch, or while a check runs, is dropped: one check per watch at a time)."""
        if self._watch is not None and self._checking is None:
            self._checking = asyncio.ensure_future(self._check(self._watch))

    async def _check(self, watch) -> None:
        """Compare etcd's (count, newest revision) of the prefix with what the watch
        delivered; when it missed something, or the connection failed over from the
        endpoint the watch was made on (a failed check counts so once it moved on), cancel
        it (the watcher lists anew), else check again at the next tick.

        The check is one small range read, not a listing: a synapse watching a thousand
        services must not list them all every few minutes. It is batched with the other
        watchers' checks of the connection (a shared tick, one transaction per 128), and
        between checks a watcher holds no task, only its callback on the tick.
        """
        assert self.conn is not None
        stale = False
        try:
            count, newest = await self.conn.fingerprint(self.prefix.encode())
        except Exception as exc:  # a broken watch reports itself; a moved one: below
            event(log, "etcd_check_failed", level=logging.INFO, service=self.service,
                  error=f"{type(exc).__name__}: {str(exc)[:200]}")  # fmt: skip
        else:
            known = max(map(_version, self._keys.values()), default=0)
            stale = (count, newest) != (len(self._keys), known)
        finally:
            self._checking = None
        if watch is not self._watch:
            return  # it ended meanwhile
        if self.conn.failovers != self._made_at:
            # The connection left the endpoint the watch was made on (the check, or another
            # call, failed there): a JSON watch stays on it, silent if its member is stopped
            # or cut off. (A gRPC watch ended with its client.) Watch on the current one.
            event(log, "etcd_watch_left", service=self.service,
                  endpoint=self.conn.current_endpoint)  # fmt: skip
        elif not stale:
            self.conn.after_next_check(RESYNC_INTERVAL, self._on_tick)
            return
        else:
            # Either the watch is dead, or an event was still on its way: both are cured by
            # listing and watching again.
            event(log, "etcd_watch_stale", level=logging.WARNING, service=self.service,
                  listed=count, known=len(self._keys))  # fmt: skip
        self._stale = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(watch.cancel(), 2)

    def _load(self, listing: Listing) -> None:
        """The listing's records as the known keys. A function of its own, so that nothing
        of the listing outlives it: its protobuf messages hold the whole reply of the batch
        (up to 128 services' records, C memory) for as long as one of them is referenced,
        and the caller's frame lives as long as the watch (etcd 1,000 x 20: ~5 MB)."""
        keys: dict[str, Found | Entry] = {}
        for kv in listing.kvs:
            origin = ORIGIN + kv.key.decode("utf-8", "replace")
            keys[origin] = self._decode(origin, kv.value, kv.mod_revision, kv.create_revision)
        self._keys = keys
        self.revision = listing.revision

    def _apply(self, events: list) -> None:
        """One batch of watch events into the known keys, and one report."""
        seen = time.monotonic()
        for ev in events:
            self.count_event()
            origin = ORIGIN + ev.kv.key.decode("utf-8", "replace")
            self.revision = max(self.revision or 0, ev.kv.mod_revision)
            if ev.kind == "DELETE":
                self._keys.pop(origin, None)
            else:
                self._keys[origin] = self._decode(
                    origin, ev.kv.value, ev.kv.mod_revision, ev.kv.create_revision
                )
        self._report(seen)

    def _decode(self, origin: str, value: bytes, mod_revision: int, created: int) -> Found | Entry:
        """``created`` (the key's create revision) orders registrations for leader_election."""
        old = self._keys.get(origin)
        if old is not None and _version(old) == mod_revision:
            return old  # unchanged (a re-list): no second log line or metric
        fallback = origin[len(ORIGIN) :].rsplit("/", 1)[-1] or None
        try:
            decode = self.discovery.decode
            if decode.method == "serverset":
                reg = decode_serverset(value, decode.endpoint_name, fallback_name=fallback)
            else:
                reg = decode_nerve(value, fallback_name=fallback)
        except InvalidRecord as exc:
            # A writer refreshing its bad record (a new mod revision, the same refusal) is
            # the same record: logged and counted once, as ZooKeeper's watcher does.
            if type(old) is not Entry or old.reason != exc.reason:
                self.bad_record(origin, exc.reason)
            return Entry(None, exc.reason, mod_revision, created)
        note_ignored(self, origin, reg)
        if created == mod_revision:  # never modified since created: its Found is its entry
            return Found(reg, origin, mod_revision)
        return Entry(reg, None, mod_revision, created)

    def _report(self, event_time: float) -> None:
        """The valid records (sorted by key; the stored Founds themselves, so an unchanged
        record compares with the last report by identity) and the count of refused ones."""
        found: list[Found] = []
        skipped = 0
        for origin, record in sorted(self._keys.items()):
            if type(record) is Found:
                found.append(record)
            elif record.registration is None:
                skipped += 1
            else:
                found.append(Found(record.registration, origin, record.sequence))
        self.report(found, skipped, event_time)

    async def close(self) -> None:
        if self._outage is not None:
            self._outage.forget(self)
        watch, self._watch = self._watch, None
        if watch is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(watch.cancel(), 2)

    def status(self) -> dict:
        out = super().status()
        transport = self.conn.transport if self.conn is not None else None
        out.update(prefix=self.prefix, keys=len(self._keys), revision=self.revision,
                   transport=transport, relists=self.relists,
                   stale_watches=self.stale_watches, overflows=self.overflows)  # fmt: skip
        return out
