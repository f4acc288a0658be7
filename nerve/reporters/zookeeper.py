"""ZooKeeper reporter: nerve's znode ``<zk_path>/<instance_id>_<seq>`` holding the JSON record.

Works through a ``ZooKeeperConnection`` shared by every service on the same ensemble.
Session handling:
- SUSPENDED: nothing to do; the session (and our ephemeral node) may well survive.
- LOST / a new session: the ephemeral node died with the old session, so the node is
  re-created as soon as the new session exists (the event wakes the reconcile task).
Whenever the outcome of a write is unknown (start, a lost answer, a new session), the
path is scanned before writing: a node of ours with our record is adopted if it belongs
to the current session, and deleted if it is a leftover (a previous nerve run with the
same instance id, or a create that landed after its answer was lost). So a restart or a
retry never leaves two znodes for one registration. A leftover goes only after our own
node exists (or when the service is withdrawn): the registration never disappears on the
way. A changed record (a reload) is written the same way: the data set in place, or,
when the node's name encodes the record, the new node created before the old one goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from typing import Any

from kazoo.exceptions import BadVersionError, NodeExistsError, NoNodeError, RolledBackError

from nerve.metrics import NerveMetrics
from nerve.reporters.base import RegistryUnavailable, Reporter
from nerve.reporters.zk_node_watch import NodeWatch
from smartstack.logs import event
from smartstack.record import Registration, child_prefix, encode, encode_child_prefix, same_record
from smartstack.tasks import wait_event
from smartstack.zookeeper import ZooKeeperConnection

log = logging.getLogger("nerve.reporter.zookeeper")

SEQUENCE_DIGITS = 10  # ZooKeeper appends a 10-digit counter to sequential nodes
SEQUENCE_SKIPS = 16  # counter values skipped per create (names taken by copied nodes)


def node_acl(conn: ZooKeeperConnection, acl: str) -> list[Any] | None:
    """ACL for our nodes: ``open`` (world), ``read_only_world`` (we write, all read) or
    ``creator`` (only our digest or SASL identity). Without auth, always open."""
    owner = None if acl == "open" else conn.owner_acl()
    if owner is None:
        return None
    if acl == "creator":
        return [owner]
    return conn.default_acl()


class ZooKeeperReporter(NodeWatch, Reporter):
    kind = "zookeeper"

    def __init__(
        self,
        service: str,
        registration: Registration,
        conn: ZooKeeperConnection,
        zk_path: str,
        *,
        instance_id: str,
        node_type: str = "ephemeral_sequential",
        use_path_encoding: bool = False,
        ttl_seconds: float | None = None,
        acl: str = "open",
        op_timeout: float = 10.0,
        metrics: NerveMetrics | None = None,
    ) -> None:
        super().__init__(service, registration, metrics)
        self.conn = conn
        self.zk_path = zk_path.rstrip("/") or "/"
        self.ephemeral = node_type.startswith("ephemeral")
        self.sequential = node_type.endswith("sequential")
        self.instance_id = instance_id
        self.use_path_encoding = use_path_encoding
        self._set_record(registration)
        self.acl = node_acl(conn, acl)
        self.op_timeout = op_timeout
        self.node: str | None = None
        self.czxid: int | None = None  # the node's creation id: tells it from a replacement
        self._rewrite = False  # the record changed: set the node's data
        self._superseded: list[str] = []  # our nodes of a previous record: deleted after ours
        self._connected = asyncio.Event()  # set by session events, on the loop
        self._create_sent = False  # a create went out: its node may exist (see stop)
        # Airbnb's ttl_seconds: persistent nodes only (an ephemeral one lives with the session)
        self.ttl_seconds = None if self.ephemeral else ttl_seconds
        self._renewer: asyncio.Task[None] | None = None
        self._looks: set[asyncio.Task[None]] = set()  # our node's watch fired: look at it
        self.renewals = 0

    def _set_record(self, registration: Registration) -> None:
        self.registration = registration
        self.data = encode(registration)
        prefix = encode_child_prefix(registration) if self.use_path_encoding else None
        # Records too long for a child name fall back to the plain name, as nerve does.
        self.name_prefix = prefix or child_prefix(self.instance_id)

    def change_record(self, registration: Registration) -> None:
        """A reload changed the record: write it without a moment of no registration (the
        data set in place; a node whose name encodes the record, or the instance id, is
        created anew first). The record's name is the instance id (``registration_for``):
        a node left named after the old one would hold another instance's record, never
        recognised as ours again (a persistent one would stay forever)."""
        prefix = self.name_prefix
        self.instance_id = registration.name
        self._set_record(registration)
        if self.node is not None and self.name_prefix != prefix:
            self._superseded.append(self.node)
            self.node, self.czxid, self.registered = None, None, False
        elif self.node is not None:
            self._rewrite = True
        self.wake()

    def _reachable(self) -> bool:
        return self.conn.connected

    def _expires(self) -> bool:
        return self.ephemeral  # persistent nodes outlive the session

    def hold_s(self) -> float | None:
        return self.conn.session.seconds if self.ephemeral else None  # (granted, else asked)

    def _maybe_written(self) -> bool:
        return self._create_sent  # a create that never left (not connected) wrote nothing

    def _needs_write(self) -> bool:
        if self.holding:
            return False
        return super()._needs_write() or self._rewrite or bool(self._superseded)

    # --- events -------------------------------------------------------------------------

    def _attach(self) -> None:
        self.conn.add_listener(self._on_session)
        if self.ttl_seconds and self._renewer is None:
            self._renewer = asyncio.get_running_loop().create_task(
                self._renew_forever(self.ttl_seconds), name=f"zk-ttl-{self.service}"
            )

    def _detach(self) -> None:
        self.conn.remove_listener(self._on_session)
        renewer, self._renewer = self._renewer, None
        if renewer is not None:
            renewer.cancel()
        for task in list(self._looks):
            task.cancel()

    def _on_session(self, state: str) -> None:
        if state in ("connected", "new_session"):
            self._connected.set()
        else:
            self._connected.clear()
        if state in ("lost", "new_session"):
            # Our ephemeral node died with the session; persistent ones are re-found by a scan.
            if self.ephemeral:
                self.node = None
            self.mark_lost()
        elif state == "connected":
            self.wake()  # a write that waited for the connection can go now

    # --- writes ---------------------------------------------------------------------------

    def _path(self, child: str) -> str:
        return f"{self.zk_path.rstrip('/')}/{child}"

    async def _wait_connected(self) -> None:
        # Wait a while rather than fail at once: at start the session is usually a few
        # milliseconds away, and during an outage this paces the attempts.
        if not self.conn.connected:
            await wait_event(self._connected, self.op_timeout)
        if not self.conn.connected:
            raise RegistryUnavailable(f"not connected to ZooKeeper {self.conn.hosts}")

    async def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        await self._wait_connected()
        self._create_sent = self._create_sent or method == "create"
        try:
            return await asyncio.wait_for(self.conn.call(method, *args, **kwargs), self.op_timeout)
        except NoNodeError:
            raise  # a definite answer
        except BaseException:  # a cancellation (shutdown) too: the request is still in flight
            if method in ("create", "delete"):
                self.uncertain = True  # it may have happened anyway: scan next time
            raise

    async def _register(self) -> bool:
        stale = await self._scan(keep=True) if self.uncertain else []
        wrote = False
        if self.node is not None and self._rewrite:
            try:
                await self._call("set", self.node, self.data)
                event(log, "znode_data_overwritten", service=self.service, node=self.node)
                wrote = True
            except NoNodeError:  # deleted behind our back: created again below
                self.node = None
        self._rewrite = False
        if self.node is None:
            self._verdict_holds()
            try:
                self.node = await self._create()
            except NodeExistsError:
                # A fixed key (node_type ephemeral/persistent) already taken, e.g. by a run
                # that crashed: take it over, as Ruby nerve does, instead of retrying forever.
                self.node = await self._take_over(self._path(self.name_prefix))
            event(log, "znode_created", service=self.service, node=self.node)
            wrote = True
        self.registered = True
        # Only now that ours is in place do the leftovers and our previous record's node go.
        wrote = await self._delete_all(stale) or wrote
        self.uncertain = False
        try:
            await self._watch_node()
        except BaseException:
            # No watch armed (the exists got no answer): left as it is, the node would never
            # be looked at again. Doubtful instead, so the retry scans and arms it anew.
            self.uncertain = True
            raise
        return wrote

    async def _create(self) -> str:
        skipped = 0
        while True:
            try:
                return await self._create_once()
            except NodeExistsError:
                # Sequential: the parent's counter gives a name a node created by name holds
                # (a registry copied with its names). It only moves on a child's create, so
                # retrying as it is fails for as long as the path sees no other change.
                if not self.sequential or skipped == SEQUENCE_SKIPS:
                    raise
                if not skipped:
                    event(log, "znode_sequence_taken", level=logging.WARNING,
                          service=self.service, path=self.zk_path, prefix=self.name_prefix,
                          hint="the next sequential name is taken: counter advanced")  # fmt: skip
                skipped += 1
                await self._skip_sequence()

    async def _skip_sequence(self) -> None:
        """Advance the parent's counter: a scratch child created and deleted in one
        transaction, so no reader ever lists it."""
        scratch = self._path(f"{self.name_prefix}sequence-skip")

        def build(transaction: Any) -> None:
            transaction.create(scratch, b"", self.acl, ephemeral=True)
            transaction.delete(scratch)

        await self._wait_connected()
        failed = [r for r in await asyncio.wait_for(self.conn.commit(build), self.op_timeout)
                  if isinstance(r, Exception) and not isinstance(r, RolledBackError)]  # fmt: skip
        if failed:
            raise failed[0]

    async def _create_once(self) -> str:
        path, stat = await self._call(
            "create",
            self._path(self.name_prefix),
            self.data,
            self.acl,
            ephemeral=self.ephemeral,
            sequence=self.sequential,
            makepath=True,
            include_data=True,
        )
        self.czxid = stat.czxid
        return str(path)

    async def _take_over(self, path: str) -> str:
        """Ruby sets the data of the existing node. An ephemeral node of another session
        would vanish with that session (and our registration with it): it is replaced."""
        _, stat = await self._call("get", path)
        session = self.conn.client.client_id[0] if self.conn.client.client_id else None
        if self.ephemeral and stat.ephemeralOwner != session:
            node = await self._replace(path, stat.version)
            event(log, "znode_replaced", service=self.service, node=path)
            return node
        await self._call("set", path, self.data)
        self.czxid = stat.czxid
        event(log, "znode_data_overwritten", service=self.service, node=path)
        return path

    async def _replace(self, path: str, version: int) -> str:
        """The other session's node deleted and ours created in one transaction: a reader
        never finds the name missing (apart, the delete's watchers could read in between
        and take the server out of HAProxy for a moment)."""
        await self._wait_connected()
        self._create_sent = True

        def build(transaction: Any) -> None:
            transaction.delete(path, version=version)
            transaction.create(path, self.data, self.acl, ephemeral=True)

        try:
            results = await asyncio.wait_for(self.conn.commit(build), self.op_timeout)
        except BaseException:  # (as _call: it may have been applied anyway)
            self.uncertain = True
            raise
        failed = [
            r for r in results if isinstance(r, Exception) and not isinstance(r, RolledBackError)
        ]
        if any(isinstance(r, NoNodeError | BadVersionError) for r in failed):
            return await self._create()  # gone or rewritten meanwhile: NodeExists is retried
        if failed:
            raise failed[0]
        _, stat = await self._call("get", path)
        self.czxid = stat.czxid
        return path

    async def _renew_forever(self, interval: float) -> None:
        """ttl_seconds: re-write our persistent node's data (its mtime) every ``interval``."""
        await asyncio.sleep(random.uniform(0, interval))  # a fleet must not renew in lockstep
        while True:
            node = self.node
            if node is not None and self.registered and self.conn.connected:
                try:
                    await self._call("set", node, self.data)
                    self.renewals += 1
                except NoNodeError:  # deleted behind our back: register it again
                    event(log, "znode_vanished", level=logging.WARNING, service=self.service,
                          node=node)  # fmt: skip
                    self.node = None
                    self.mark_lost()
                except Exception as exc:  # an outage: the next interval tries again
                    error = f"{type(exc).__name__}: {exc}"[:200]
                    event(log, "znode_renew_failed", level=logging.WARNING,
                          service=self.service, error=error)  # fmt: skip
            await asyncio.sleep(interval)

    async def _withdraw(self) -> bool:
        stale = await self._scan(keep=False) if self.uncertain else []
        wrote = await self._delete_all(stale)
        if self.node is not None:
            if not await self._handed_over(self.node):
                await self._delete(self.node)
                event(log, "znode_deleted", service=self.service, node=self.node)
                wrote = True
            self.node, self.czxid = None, None
        self.registered, self._rewrite, self.uncertain = False, False, False
        return wrote

    async def _delete_all(self, stale: list[str]) -> bool:
        """Delete the leftovers found by a scan and our nodes of a previous record, never
        our own node: a fixed name (``ephemeral``) taken over is the leftover's very path."""
        stale = [path for path in stale if path != self.node]
        self._superseded = [path for path in self._superseded if path != self.node]
        wrote = bool(stale) or bool(self._superseded)
        for path in stale:
            await self._delete(path)
            event(log, "znode_leftover_deleted", service=self.service, node=path)
        for path in list(self._superseded):
            await self._delete(path)
            event(log, "znode_deleted", service=self.service, node=path)
            self._superseded.remove(path)
        return wrote

    async def _handed_over(self, path: str) -> bool:
        """Replaced by a reload: is ``path`` now the successor's node (adopted, or taken
        over under the same fixed name)? Then it is not ours to delete."""
        successor = self.successor
        if not isinstance(successor, ZooKeeperReporter) or successor.node != path:
            return False
        try:
            _, stat = await self._call("get", path)
        except NoNodeError:
            return True  # gone already
        return bool(stat.czxid == successor.czxid)

    async def _delete(self, path: str) -> None:
        with contextlib.suppress(NoNodeError):  # already gone: that is what we wanted
            await self._call("delete", path)

    def _is_ours(self, child: str) -> bool:
        if not self.sequential:
            return child == self.name_prefix
        suffix = child[len(self.name_prefix) :]
        return (
            child.startswith(self.name_prefix)
            and len(suffix) == SEQUENCE_DIGITS
            and suffix.isdigit()
        )

    async def _copies(self, skip: str | None = None) -> list[tuple[str, Any]]:
        """The nodes with our name and our record, (path, stat) in name order; ``skip``
        is not read. Same instance, another record: another service's node, not one."""
        return [(path, stat) for path, stat, _ in await self._copies_of(skip, loose=False)]

    async def _copies_of(self, skip: str | None, loose: bool) -> list[tuple[str, Any, bool]]:
        """(path, stat, exact): ``loose`` also takes a node whose data differs from ours
        but is our record as every reader decodes it (``same_record``)."""
        try:
            children = await self._call("get_children", self.zk_path)
        except NoNodeError:
            children = []
        copies = []
        for child in sorted(children):
            path = self._path(child)
            if not self._is_ours(child) or path == skip:
                continue
            try:
                data, stat = await self._call("get", path)
            except NoNodeError:
                continue
            if data == self.data:
                copies.append((path, stat, True))
            elif loose and same_record(data, self.data):
                # (an upgrade's restart stop left it, written before 4908bdc: unrecognised
                # it stood for the resumed session's whole life, its service down or not)
                copies.append((path, stat, False))
        return copies

    async def _scan(self, keep: bool) -> list[str]:
        """Adopt our node of this session (if ``keep``); the other copies of our record are
        returned, for the caller to delete once that is safe."""
        successor = self.successor if isinstance(self.successor, ZooKeeperReporter) else None
        # (the reload's new registration: not ours to touch)
        skip = successor.node if successor is not None else None
        copies = await self._copies_of(skip, loose=True)
        session = self.conn.client.client_id[0] if self.conn.client.client_id else None
        adopted: str | None = None
        stale: list[str] = []
        for path, stat, exact in sorted(copies, key=lambda c: not c[2]):  # exact ones first
            mine = stat.ephemeralOwner == session if self.ephemeral else True
            if keep and mine and adopted is None:
                adopted, self.czxid = path, stat.czxid
                self._rewrite = self._rewrite or not exact  # (_register sets our bytes)
                continue
            stale.append(path)
        self.node = adopted
        self.registered = adopted is not None
        return stale

    def where(self) -> dict[str, Any]:
        return {
            **super().where(),
            "hosts": self.conn.hosts,
            "path": self.zk_path,
            "node": self.node,
            "connected": self.conn.connected,
        }
