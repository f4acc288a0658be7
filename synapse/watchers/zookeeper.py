"""ZooKeeper watcher: the children of ``discovery.path``, one record per child.

What it fixes from the Ruby original:
- At most ONE read per new or changed child (airbnb/synapse#290 read every child
  on every change). Records are cached by child name: nerve never rewrites a
  znode in place, it re-creates it under a new sequential name. A data watch set
  by that one read still catches an in-place ``set`` (then the child is read
  again). ``use_path_encoding`` children (``base64_...``) are decoded from the
  name, without any read.
- A child that vanishes before its read (NoNode) is just gone, not a crash (#205). One
  we may not read (ACL) is skipped like a bad record; an unlistable path is logged, retried.
- After a reconnect (kazoo drops every watch callback when the connection
  drops, even if the session survives) and after a session expiry the watches
  are set again (#287): the children are listed again and cached children are
  only checked with ``exists`` (no data read unless their data changed); the
  last known list stays in force meanwhile, SUSPENDED changes nothing.
- The path may not exist yet: an existence watch starts the watch when it appears.
- On ZooKeeper 3.6+ one persistent recursive watch on the path replaces the children,
  data and existence watches: its events name the child, so an added child costs one
  read and no listing (synapse/watchers/zookeeper_tree.py); older servers keep the above.
- Airbnb's generator settings in the data of ``path`` (or ``generator_config_path``) are
  read once, then again only when their data watch fires or after a reconnect
  (synapse/generator_config.py); they travel with the report.

The session is shared by every service on the same ensemble (smartstack.zookeeper).
All kazoo callbacks hop onto the event loop; the sync itself is one task.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from kazoo.exceptions import KazooException, NoAuthError, NoNodeError
from kazoo.protocol.states import EventType, WatchedEvent

from smartstack.backoff import Backoff, spread
from smartstack.logs import event
from smartstack.record import (
    InvalidRecord,
    Registration,
    decode_child_name,
    decode_nerve,
    decode_serverset,
)
from smartstack.stall_clock import StallClock, stall_clock
from smartstack.tasks import Wake
from smartstack.zookeeper import ZooKeeperConnection
from synapse.generator_config import parse_generator_config
from synapse.watchers.base import Entry, Watcher
from synapse.watchers.record_notes import note_ignored
from synapse.watchers.zookeeper_tree import TreeWatch

log = logging.getLogger("synapse.watchers.zookeeper")

READ_BATCH = 512  # reads in flight at once for one service (each batch: one hop to the loop)
# One-shot watches: a change's 1-2 new children get a watched `get` each (no setWatches).
# Under the tree watch all reads batch in multi-reads (the reports then share a round).
SMALL_READ = 2


def _chunks(names: list[str]) -> list[list[str]]:
    return [names[i : i + READ_BATCH] for i in range(0, len(names), READ_BATCH)]


# After a reconnect every watcher of every synapse would list again at the same instant
# (the registry just came back): each waits a random part of the discovery block's
# relist_jitter window first (2 s by default; minutes at thousands of hosts). The last
# list stays in force meanwhile. The first connection is spread by start_jitter instead.


def child_fallback_name(child: str) -> str:
    """A name for records without one: the child name without ZooKeeper's sequence."""
    base, sep, seq = child.rpartition("_")
    return base if sep and seq.isdigit() and base else child


def child_sequence(child: str) -> int | None:
    """Ruby's parse_numeric_id_suffix: the digits after the child name's last ``_``."""
    seq = child.rsplit("_", 1)[-1]
    return int(seq) if seq.isdigit() else None


class ZooKeeperWatcher(Watcher, TreeWatch):
    method = "zookeeper"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        path = self.discovery.path or "/"
        self.path = path.rstrip("/") or "/"
        self.conn: ZooKeeperConnection | None = None
        self._children: dict[str, Entry] = {}  # version: mzxid (None: path-encoded)
        self._changed: set[str] = set()  # children whose data watch fired
        self._deleted: set[str] = set()  # children whose data watch said: deleted
        self._verify = False  # after a reconnect: check cached children (one multi-read)
        self._wake = Wake()  # (one waiter: run())
        self._event_time: float | None = None  # first unsynced event
        self.path_exists: bool | None = None
        self._was_denied = False  # the last listing was refused by the path's ACL
        self.reads = 0
        self._listed = False  # a first list was done: later re-lists after reconnects jitter
        # kazoo keeps watch callbacks in sets: stable wrappers are registered only once.
        self._children_watch = None
        self._path_watch = None
        self._data_watch = None
        self._gen_watch = None
        # Airbnb: generator settings in the data of `path` (or generator_config_path)
        gen_path = self.discovery.generator_config_path
        self.generator_path = None if gen_path == "disabled" else (gen_path or self.path)
        self._gen_dirty = self.generator_path is not None
        self._init_tree()

    # --- lifecycle ---------------------------------------------------------------------

    async def run(self) -> None:
        pool = self.ctx.zk_pool
        assert pool is not None and self.discovery.hosts
        auth = self.discovery.zk_auth.pair() if self.discovery.zk_auth else None
        self.conn = pool.acquire(self.discovery.hosts, self.ctx.zk_session_timeout, auth)
        self._arm()
        self.conn.add_listener(self._on_state)
        if self.conn.announced:  # else the listener hears it (once: not a reconnect twice)
            self._on_state("connected")
        elif self.conn.auth_error:  # a shared connection refused before: it hears nothing more
            self._on_state("lost")
        policy = self.discovery.retry_policy
        backoff = Backoff(policy.base_interval, policy.max_interval)
        stalls = stall_clock()
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self.conn.connected:
                continue  # the state listener wakes us when the session is back
            if self._verify and self._listed and not self._own_stall(stalls):
                await asyncio.sleep(spread(self.discovery.relist_jitter))
                if not self.conn.connected:
                    continue
            try:
                await self._sync()
            except (KazooException, OSError) as exc:
                # Connection loss mid-sync: keep the last list; the listener wakes us again.
                self.set_connected(self.conn.connected, self._why(f"{type(exc).__name__}: {exc}"))
                if self.conn.connected:
                    await asyncio.sleep(backoff.next())
                    self._wake.set()
            else:
                backoff.reset()

    def _own_stall(self, stalls: StallClock) -> bool:
        """A reconnect after this process's own stall (its session expired while it stood
        still): the registry was fine and no fleet is re-listing with us, but our list is
        as old as the stall: list again now, not after a part of ``relist_jitter``."""
        gap = stalls.stalled_within(max(5.0, self.ctx.zk_session_timeout))
        if gap is not None:
            event(log, "zk_relist_after_stall", service=self.service, gap_s=round(gap, 2))
        return gap is not None

    def _arm(self) -> None:
        assert self.conn is not None
        self._children_watch = self.conn.on_loop(self._on_node)
        self._path_watch = self.conn.on_loop(self._on_node)
        self._data_watch = self.conn.on_loop(self._on_data)
        self._gen_watch = self.conn.on_loop(self._on_generator)
        if self.path != "/":  # (a watch on the whole tree would hear every write)
            self._tree_watch = self._tree_callback()

    async def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.remove_listener(self._on_state)
            self._close_tree(conn)
            if self.ctx.zk_pool is not None:
                await self.ctx.zk_pool.release(conn)  # closed when its last user leaves

    # --- events (all on the loop) --------------------------------------------------------

    def _mark(self, at: float | None = None) -> None:
        """An event to sync; ``at``: when kazoo's thread read it (else now, on the loop)."""
        at = time.monotonic() if at is None else at
        if self._event_time is None or at < self._event_time:
            self._event_time = at
        self.change_coming()  # (its report waits for a read: background work waits for it)
        self._wake.set()

    def _on_state(self, state: str) -> None:
        self._tree_state()
        if state in ("connected", "new_session"):
            self.set_connected(True)
            # kazoo forgets every watch callback when the connection drops, even when the
            # session survives (#287): list again and check the cached children in one
            # multi-read (before a first listing there is nothing to check).
            self._verify = self._listed
            self._mark()
        else:  # suspended / lost: keep serving the last list
            self.set_connected(False, self._why(f"zookeeper session {state}"))

    def _why(self, error: str) -> str:
        """A refused credential says so (not "session lost" or "AuthFailedError: ")."""
        refused = self.conn.auth_error if self.conn is not None else None
        return refused or error

    def _on_node(self, ev: WatchedEvent) -> None:
        """The children or the existence of ``path`` changed: list again."""
        if ev.type != EventType.NONE:  # NONE: the connection went away; reconnecting resyncs
            self.count_event()
            self._mark()

    def _on_generator(self, ev: WatchedEvent) -> None:
        if ev.type != EventType.NONE:
            self.count_event()
            self._gen_dirty = True
            self._mark()

    def _on_data(self, ev: WatchedEvent) -> None:
        if ev.type == EventType.NONE or not ev.path:
            return
        self.count_event()
        child = ev.path.rsplit("/", 1)[-1]
        if ev.type == EventType.CHANGED:
            self._changed.add(child)
        elif ev.type == EventType.DELETED:
            self._deleted.add(child)
        self._mark()

    # --- sync ----------------------------------------------------------------------------

    async def _sync(self) -> None:
        conn = self.conn
        assert conn is not None
        event_time = self._event_time or time.monotonic()
        self._event_time = None
        sending = None
        if self._tree_watch is not None and not self._armed:
            sending = self._send_tree()  # before listing: no change falls between the two
        if sending is None and self._armed and not (self._relist or self._verify):
            await self._apply_tree(event_time)  # the events named the children
            return
        self._relist = False
        self._drop_prefetched()  # a listing reads what it finds new (rare: starts, reconnects)
        verify, self._verify = self._verify, False
        if verify and self.generator_path is not None:
            self._gen_dirty = True  # watches are gone after a reconnect: read (and arm) again
        self._drop_deleted(event_time)
        try:
            if self._armed:  # the tree watch hears the children: a batched listing
                names = await conn.list_unwatched(self.path)
            else:
                names = await conn.call("get_children", self.path, watch=self._children_watch)
        except NoNodeError:
            names = None
        except BaseException as exc:
            self._verify, self._relist = self._verify or verify, True
            if isinstance(exc, NoAuthError):
                self._denied()
            raise
        finally:
            if sending is not None:
                self._tree_answer(sending)  # (answered before the listing)
        if sending is not None and not self._armed:
            return  # refused or lost: the listing has no watch; the next sync lists again
        self._was_denied = False
        self._listed = True
        if names is None:
            # No path (yet, or any more): watch for it to appear (the tree watch hears it).
            stat = None if self._armed else await conn.call("exists", self.path,
                                                            watch=self._path_watch)  # fmt: skip
            if stat is not None:  # created in between: list again
                self._mark()
                return
            if self.path_exists is not False:
                event(log, "zk_path_missing", level=logging.WARNING, service=self.service,
                      path=self.path)  # fmt: skip
            self.path_exists = False
            self._children.clear()
            self.report([], 0, event_time)
            return
        if self.path_exists is False and self.generator_path is not None:
            self._gen_dirty = True  # the path appeared: its data may hold settings
        self.path_exists = True
        current = set(names)
        for gone in set(self._children) - current:
            del self._children[gone]
        self._changed &= current
        try:
            if self._gen_dirty:  # read together: one multi-read, not two round trips
                await asyncio.gather(
                    self._read_generator_config(), self._refresh(sorted(current), verify)
                )
            else:
                await self._refresh(sorted(current), verify)
        except BaseException:
            self._verify, self._relist = self._verify or verify, True
            raise
        self._report_cache(event_time)

    async def _refresh(self, names: list[str], verify: bool) -> None:
        """Read what is new or changed; after a new session, re-arm data watches."""
        to_read = [n for n in names if n not in self._children or n in self._changed]
        if verify:
            reading = set(to_read)
            to_check = [n for n in names if n not in reading and self._children[n].version]
            await self._check_many(to_check)
        await self._read_many(to_read)

    async def _check_many(self, names: list[str]) -> None:
        """After a reconnect, did a cached child change meanwhile? Its data and stat come in
        the batched multi-read (ZooKeeper 3.6+: one request for many children, where an
        exists() each cost a request per child), watched; only changed ones are decoded."""
        assert self.conn is not None
        base = self._base()
        for part in _chunks(names):
            self._count_reads(len(part))
            replies = await self.conn.get_many([f"{base}{n}" for n in part], self._child_watch)
            for name, reply in zip(part, replies, strict=True):
                if isinstance(reply, NoNodeError):
                    self._children.pop(name, None)  # gone: the listing reports it
                elif isinstance(reply, Exception) or reply[1].mzxid != self._children[name].version:
                    self._take(name, reply, f"zookeeper:{base}{name}")

    async def _read(self, name: str) -> None:
        await self._read_many([name])

    def _count_reads(self, count: int) -> None:
        self.reads += count
        self.metrics.registry_reads.labels(self.service, self.method).inc(count)

    async def _read_many(self, names: list[str]) -> None:
        """Learn children: from the name when path-encoded, else with exactly one GET each,
        READ_BATCH of them in flight at once."""
        assert self.conn is not None
        base = self._base()
        to_get = []
        for name in names:
            self._changed.discard(name)
            if not self._from_name(name, f"zookeeper:{base}{name}"):
                to_get.append(name)
        if self._prefetched:
            to_get = await self._take_prefetched(to_get)
        for part in _chunks(to_get):
            self._count_reads(len(part))
            paths = [f"{base}{n}" for n in part]
            if len(paths) <= SMALL_READ and self.reports and not self._armed:  # plain, watched
                replies = await self.conn.call_many(
                    "get", [(p,) for p in paths], watch=self._child_watch
                )
            else:  # a start or a burst: multi-reads, batched with other services' reads
                replies = await self.conn.get_many(paths, self._child_watch)
            for name, reply in zip(part, replies, strict=True):
                self._take(name, reply, f"zookeeper:{base}{name}")

    def _from_name(self, name: str, origin: str) -> bool:
        """A path-encoded child (or a bad name) is known without a read: True then."""
        try:
            from_name = decode_child_name(name)
        except InvalidRecord as exc:
            self._remember(name, None, exc.reason, None, origin)
            return True
        if from_name is None:
            return False
        note_ignored(self, origin, from_name)
        self._remember(name, from_name, None, None, origin)
        return True

    def _take(self, name: str, reply: Any, origin: str) -> None:
        """One child's GET reply: its record, or why there is none."""
        if isinstance(reply, NoNodeError):
            # Deleted between the children list and this read (#205): simply not there.
            self._children.pop(name, None)
            return
        if isinstance(reply, NoAuthError):
            # An ACL that hides one child is that child's problem: skip it like a bad
            # record instead of failing (and retrying) the whole service's sync.
            self._remember(name, None, "no permission to read the znode", None, origin)
            return
        if isinstance(reply, Exception):
            raise reply  # connection loss: run() keeps the last list and tries again
        data, stat = reply
        try:
            registration = self._decode(data, name)
        except InvalidRecord as exc:
            self._remember(name, None, exc.reason, stat.mzxid, origin)
            return
        note_ignored(self, origin, registration)
        self._remember(name, registration, None, stat.mzxid, origin)

    async def _read_generator_config(self) -> None:
        """Read (and watch) the generator settings; a bad or missing node means none."""
        assert self.conn is not None and self.generator_path is not None
        try:  # (with the children's reads: one multi-read for many services at a start)
            [reply] = await self.conn.get_many([self.generator_path], self._gen_read_watch)
            if isinstance(reply, Exception):
                raise reply
            data = reply[0]
        except NoNodeError:
            await self.conn.call("exists", self.generator_path, watch=self._gen_read_watch)
            data = b""
        except NoAuthError:
            data = b""
        try:
            found, notes = parse_generator_config(data)
        except ValueError as exc:
            found, notes = {}, [f"not a JSON object of generator settings: {exc}"]
        for note in notes:
            event(log, "generator_config_ignored", level=logging.WARNING, service=self.service,
                  path=self.generator_path, reason=note[:200])  # fmt: skip
        self.generator_config = found
        self._gen_dirty = False  # only now: a connection loss above leaves it to read again

    def _decode(self, data: bytes, name: str) -> Registration:
        decode = self.discovery.decode
        if decode.method == "serverset":
            return decode_serverset(data, decode.endpoint_name, fallback_name=name)
        return decode_nerve(data, fallback_name=child_fallback_name(name))

    def _remember(
        self,
        name: str,
        registration: Registration | None,
        reason: str | None,
        mzxid: int | None,
        origin: str,
    ) -> None:
        old = self._children.get(name)
        self._children[name] = Entry(registration, reason, mzxid, child_sequence(name))
        if reason is not None and (old is None or old.reason != reason):
            self.bad_record(origin, reason)

    def _denied(self) -> None:
        """The path's ACL hides its children from us (nerve's ``acl: creator`` and no or
        other ``zk_auth`` here): log and count once; run() retries with backoff."""
        if not self._was_denied:
            self._was_denied = True
            reason = "no permission to list the path (set discovery.zk_auth?)"
            self.bad_record(f"zookeeper:{self.path}", reason)

    def _base(self) -> str:
        return "/" if self.path == "/" else f"{self.path}/"

    def _report_cache(self, event_time: float) -> None:
        base = self._base()
        self.report_entries(self._children, lambda name: f"zookeeper:{base}{name}", event_time)

    def status(self) -> dict:
        out = super().status()
        out.update(path=self.path, path_exists=self.path_exists, children=len(self._children),
                   reads=self.reads, denied=self._was_denied,
                   persistent_watch=self._armed)  # fmt: skip
        return out
