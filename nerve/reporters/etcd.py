"""etcd reporter: one key per registration, attached to the cluster's shared lease.

The key is deterministic, ``<etcd_path>/<name>_<host>_<port>`` (name = instance_id), so a
restarted nerve overwrites its old key instead of adding a second one; the value is the
same JSON record nerve writes to ZooKeeper. The key lives as long as the lease: a nerve
killed with -9 disappears from etcd after ``etcd_lease_ttl`` seconds.
"""

from __future__ import annotations

import logging
from typing import Any

from nerve.metrics import NerveMetrics
from nerve.reporters.base import Reporter
from nerve.reporters.etcd_lease import LeaseKeeper
from smartstack.logs import event
from smartstack.record import Registration, encode, etcd_key

log = logging.getLogger("nerve.reporter.etcd")


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
    ) -> None:
        super().__init__(service, registration, metrics)
        self.keeper = keeper
        self.key = etcd_key(etcd_path, registration)
        self.data = encode(registration)
        self.lease_id: int | None = None
        self.stale = False  # registered, but etcd was unreachable: write the truth again

    def _attach(self) -> None:
        self.keeper.add_listener(self._on_lease)

    def _detach(self) -> None:
        self.keeper.remove_listener(self._on_lease)

    def _on_lease(self, state: str) -> None:
        if state == "lost" and (self.registered or self.desired):
            self.lease_id = None
            self.mark_lost()
        elif state == "reconnected":
            self.stale = self.desired
            self.wake()

    def _needs_write(self) -> bool:
        return self.stale or super()._needs_write()

    async def _register(self) -> bool:
        lease_id = await self.keeper.lease()
        try:
            await self.keeper.conn.with_client(
                lambda c: c.put(self.key.encode(), self.data, lease=lease_id)
            )
        except Exception as exc:
            if _lease_not_found(exc):
                self.keeper.invalidate(lease_id, "etcd refused a put: lease not found")
            raise
        if self.lease_id != lease_id:
            event(log, "etcd_key_put", service=self.service, key=self.key, lease=f"{lease_id:x}")
        self.lease_id = lease_id
        self.registered, self.uncertain, self.stale = True, False, False
        return True

    async def _withdraw(self) -> bool:
        await self.keeper.conn.with_client(lambda c: c.delete(self.key.encode()))
        if self.registered:
            event(log, "etcd_key_deleted", service=self.service, key=self.key)
        self.lease_id = None
        self.registered, self.uncertain, self.stale = False, False, False
        return True

    def where(self) -> dict[str, Any]:
        return {
            **super().where(),
            "endpoints": self.keeper.conn.endpoints,
            "endpoint": self.keeper.conn.current_endpoint,
            "key": self.key,
            "lease": f"{self.lease_id:x}" if self.lease_id is not None else None,
            "lease_ttl": self.keeper.ttl,
        }
