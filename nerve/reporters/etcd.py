"""etcd reporter: one key per registration, attached to the cluster's shared lease.

The key is deterministic, ``<etcd_path>/<name>_<host>_<port>`` (name = instance_id), so a
restarted nerve overwrites its old key instead of adding a second one; the value is the
same JSON record nerve writes to ZooKeeper. The key lives as long as the lease: a nerve
killed with -9 disappears from etcd after ``etcd_lease_ttl`` seconds, unless a restarted
nerve holds it: while its checks have not decided (``Reporter.holding``) the key found with
our record keeps its lease renewed (``etcd_leftover``), at most ``hold_for`` seconds. A
changed record (a reload) is put on the same key, in place; a moved key is put before the
old one goes.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any

from nerve.metrics import NerveMetrics
from nerve.reporters.base import Reporter
from nerve.reporters.etcd_lease import LeaseKeeper, retry_pause
from smartstack.logs import event
from smartstack.record import Registration, encode, etcd_key, same_record

log = logging.getLogger("nerve.reporter.etcd")


AUDIT_INTERVAL = 3.0  # seconds between two reads of our own key (see _audit_forever)


def _lease_not_found(exc: Exception) -> bool:
    return "lease not found" in str(exc)


class EtcdReporter(Reporter):
    kind = "etcd"

    def __init__(
        self,
        service: str,
        registration: Registration,
        keeper: LeaseKeeper,
        etcd_path: str,
        metrics: NerveMetrics | None = None,
        hold_for: float | None = None,
    ) -> None:
        """``hold_for``: the longest a previous run's key of ours is held (its lease
        renewed) while the checks decide; None: never renewed."""
        super().__init__(service, registration, metrics)
        self.keeper = keeper
        self.etcd_path = etcd_path
        self.key = etcd_key(etcd_path, registration)
        self.data = encode(registration)
        self.revision: int | None = None  # of our last put: tells our write from a successor's
        self._superseded: list[str] = []  # our keys of a previous record: deleted after ours
        self.lease_id: int | None = None
        self.stale = False  # registered, but etcd was unreachable: write the truth again
        self.hold_for = hold_for
        self._leftover: asyncio.Task[None] | None = None
        self._audit: asyncio.Task[None] | None = None

    def _attach(self) -> None:
        self.keeper.add_listener(self._on_lease)
        if self._audit is None:
            self._audit = asyncio.get_running_loop().create_task(
                self._audit_forever(), name=f"etcd-audit-{self.service}"
            )
        if self.holding and self.hold_for and self._leftover is None:
            if self.keeper.leftovers is not None:
                self.keeper.leftovers.expect(self)
            self._leftover = asyncio.get_running_loop().create_task(
                self._hold_leftover(time.monotonic() + self.hold_for),
                name=f"etcd-leftover-{self.service}",
            )

    def _detach(self) -> None:
        self.keeper.remove_listener(self._on_lease)
        self._release_leftover()
        audit, self._audit = self._audit, None
        if audit is not None:
            audit.cancel()

    async def _audit_forever(self) -> None:
        """Our key deleted by another client while the lease lives on is put again (Ruby
        nerve's ``ping?``): a get of it every ``AUDIT_INTERVAL`` while registered. A read,
        not a watch: the JSON gateway transport has none, and a watch per key needs its
        own recovery (compaction, a new member); one get per key per 3 s is less than the
        keep-alives nerve already sends (one per TTL/3, 1.7 s by default)."""
        await asyncio.sleep(random.uniform(0, AUDIT_INTERVAL))  # a fleet not in lockstep
        while True:
            if self.registered and self.in_sync:
                await self._look_at_key()
            await asyncio.sleep(AUDIT_INTERVAL)

    async def _look_at_key(self) -> None:
        key, revision = self.key, self.revision
        try:
            kv = await self.keeper.conn.with_client(lambda c: c.get(key.encode()))
        except Exception:  # etcd away: the keep-alives notice, "reconnected" puts it again
            return
        # Unless written or withdrawn meanwhile (our own delete is not a disappearance).
        if kv is None and (key, revision) == (self.key, self.revision) and self.in_sync:
            self.registration_vanished(key=key)

    async def _hold_leftover(self, deadline: float) -> None:
        """A previous run's key with our record: keep its lease alive while we hold it (it
        would expire before rise passes when nobody renews it), if every key on that lease
        is held so (``LeftoverLeases``). A key with another record (another weight, labels,
        ...) is left to its lease, as the old registration of a record we no longer write;
        put over or deleted when the checks decide."""
        leftovers = self.keeper.leftovers
        if leftovers is None:
            return
        try:
            # Cancelled by the decision's write (``_release_leftover``): past an await, we hold.
            while time.monotonic() < deadline:
                try:
                    kv = await self.keeper.conn.with_client(lambda c: c.get(self.key.encode()))
                except Exception:  # etcd away: our decision's write will wait for it too
                    await asyncio.sleep(retry_pause(self.keeper.ttl))
                    continue
                # (our record in the bytes of an older nerve: the same registration)
                if kv is not None and same_record(kv.value, self.data):
                    left = deadline - time.monotonic()
                    if leftovers.hold(int(kv.lease), self, left, self.key.encode(),
                                      service=self.service, key=self.key):  # fmt: skip
                        return
                break
        except asyncio.CancelledError:
            leftovers.release(self)
            raise
        leftovers.release(self)  # nothing held: no lease waits for our claim

    def set_registered(self, wanted: bool) -> None:
        if not wanted:  # withdrawn: the leftover's lease is not renewed while we delete
            self._release_leftover()
        super().set_registered(wanted)

    def _release_leftover(self) -> None:
        """Decided (the key put on our lease, or deleted), or stopped: the previous run's
        lease is not renewed for us any more."""
        task, self._leftover = self._leftover, None
        if task is not None and not task.done():
            task.cancel()
        if self.keeper.leftovers is not None:
            self.keeper.leftovers.release(self)

    def hold_s(self) -> float | None:
        return float(self.keeper.ttl)

    def _on_lease(self, state: str) -> None:
        if state == "lost" and (self.registered or self.desired):
            self.lease_id = None
            self.mark_lost()
        elif state == "reconnected":
            self.stale = self.desired
            self.wake()

    def change_record(self, registration: Registration) -> None:
        """A reload changed the record: put it (the same key is overwritten in place; a new
        key is put before the old one is deleted)."""
        key = etcd_key(self.etcd_path, registration)
        if key != self.key and (self.registered or self.uncertain):
            self._superseded.append(self.key)
        self.registration, self.key, self.data = registration, key, encode(registration)
        self.stale = self.desired
        self.wake()

    def _needs_write(self) -> bool:
        if self.holding:
            return False
        return self.stale or bool(self._superseded) or super()._needs_write()

    async def _register(self) -> bool:
        lease_id = await self.keeper.lease()
        self._verdict_holds()  # (the lease may be new: the old one lost in a stall)
        try:
            put = await self.keeper.conn.with_client(
                lambda c: c.put(self.key.encode(), self.data, lease=lease_id)
            )
        except Exception as exc:
            if _lease_not_found(exc):
                self.keeper.invalidate(lease_id, "etcd refused a put: lease not found")
            raise
        if self.lease_id != lease_id:
            event(log, "etcd_key_put", service=self.service, key=self.key, lease=f"{lease_id:x}")
        self.lease_id, self.revision = lease_id, put.header.revision
        self.registered, self.uncertain, self.stale = True, False, False
        self._release_leftover()  # our key is on our lease now
        await self._delete_superseded()  # only now that the new key is there
        return True

    async def _withdraw(self) -> bool:
        if self.successor is None:
            await self.keeper.conn.with_client(lambda c: c.delete(self.key.encode()))
            if self.registered:
                event(log, "etcd_key_deleted", service=self.service, key=self.key)
        elif await self._delete_if_unchanged():
            event(log, "etcd_key_deleted", service=self.service, key=self.key)
        await self._delete_superseded()
        self._release_leftover()
        self.lease_id, self.revision = None, None
        self.registered, self.uncertain, self.stale = False, False, False
        return True

    async def _delete_if_unchanged(self) -> bool:
        """Replaced by a reload whose new reporter has put its key: delete ours only if it
        is still what we wrote last (the successor may have put the very same key)."""
        if self.revision is None:
            # Not known what we wrote: a key a reporter replacing us also writes is left to
            # it (an old lease, revoked when unused, takes it along where still attached).
            if self._replaced_at_same_key():
                return False
            key = self.key.encode()
            return bool(await self.keeper.conn.with_client(lambda c: c.delete(key)))
        conn, key, revision = self.keeper.conn, self.key.encode(), self.revision
        return await conn.with_client(lambda c: conn.delete_if_revision(c, key, revision))

    def _replaced_at_same_key(self) -> bool:
        """Whether a reporter replacing us writes our key: the successor, or its own
        successors (a later reload replaced a waiting hand-over's service: ours is then the
        old registration's reporter, and the service now registered is the one after it)."""
        seen: set[int] = {id(self)}
        successor = self.successor
        while successor is not None and id(successor) not in seen:
            if isinstance(successor, EtcdReporter) and successor.key == self.key:
                return True
            seen.add(id(successor))
            successor = successor.successor
        return False

    async def _delete_superseded(self) -> None:
        for key in list(self._superseded):
            await self.keeper.conn.with_client(lambda c, k=key: c.delete(k.encode()))
            event(log, "etcd_key_deleted", service=self.service, key=key)
            self._superseded.remove(key)

    def where(self) -> dict[str, Any]:
        return {
            **super().where(),
            "endpoints": self.keeper.conn.endpoints,
            "endpoint": self.keeper.conn.current_endpoint,
            "key": self.key,
            "lease": f"{self.lease_id:x}" if self.lease_id is not None else None,
            "lease_ttl": self.keeper.ttl,
        }
