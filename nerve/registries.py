"""The daemon's registry connections and the reporter factory.

One ZooKeeper session per ensemble and one etcd connection + lease per cluster, shared
by every service that names them; reporters are built here from a service's config.
Each registry's client is imported when a service first names it: a nerve on every host
that registers in ZooKeeper alone never loads gRPC and aetcd (~13 MB of RSS, ~0.1 s of
start), one on etcd alone never loads kazoo, and one on etcd's JSON gateway
(``etcd_transport``, the default) loads neither gRPC nor aetcd.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import weakref
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from nerve.cadence import checks_spread, first_rounds_late
from nerve.checks.base import LATE_GRACE
from nerve.config import ServiceConfig
from nerve.metrics import NerveMetrics
from nerve.reporters.base import Reporter
from smartstack.record import Registration
from smartstack.registry_auth import EtcdTLS

if TYPE_CHECKING:
    from nerve.reporters.etcd_lease import LeaseKeeper
    from smartstack.zookeeper import ZooKeeperConnection, ZooKeeperPool

EtcdKey = tuple[tuple[str, ...], str | None, str | None, EtcdTLS | None, int, str]
HOLD_SLACK = 0.5  # seconds: the service's task starting, a loaded loop


def hold_bound(cfg: ServiceConfig) -> float:
    """Seconds a restarted nerve holds a previous run's registration at most (see
    Reporter.holding): ``rise`` rounds (the largest), each the interval or, when longer,
    the slowest check (its timeout and a late timer's grace), and the spread of the first
    rounds (nerve/cadence.py)."""
    checks = [] if cfg.check_mocked else cfg.checks
    rise = max((c.rise for c in checks), default=1)
    slowest = max((c.timeout for c in checks), default=0.1) + LATE_GRACE
    slowest += checks_spread(cfg.check_interval, len(checks))  # the last one starts later
    spread = first_rounds_late(cfg.check_interval)
    return rise * max(cfg.check_interval, slowest) + spread + HOLD_SLACK


def registration_for(instance_id: str, cfg: ServiceConfig) -> Registration:
    """The record nerve writes for a service (validated on construction)."""
    return Registration(
        host=cfg.host,
        port=cfg.port,
        name=instance_id,
        weight=cfg.record_weight,
        labels=dict(cfg.labels),
        haproxy_server_options=cfg.haproxy_server_options,
    )


def reporter_identity(cfg: ServiceConfig) -> tuple[str, tuple[str, ...]]:
    """Everything that decides where and what a service registers. Two configs with the
    same identity share one registration (a reload keeps it in place)."""
    keys = (
        "host", "port", "weight", "labels", "haproxy_server_options", "reporter_type",
    )  # fmt: skip
    if cfg.reporter_type == "zookeeper":
        keys += ("zk_hosts", "zk_path", "node_type", "use_path_encoding", "zk_auth",
                 "zk_session_timeout", "ttl_seconds")  # fmt: skip
    else:
        keys += ("etcd_path", "etcd_user", "etcd_password", "etcd_tls", "etcd_lease_ttl",
                 "etcd_transport")  # fmt: skip
    values = cfg.model_dump(include=set(keys))
    return (json.dumps(values, sort_keys=True, default=str), tuple(cfg.etcd_endpoint_list()))


class Registries:
    def __init__(self, loop: asyncio.AbstractEventLoop, metrics: NerveMetrics) -> None:
        self.metrics = metrics
        self._loop = loop
        self._zookeeper: ZooKeeperPool | None = None  # built when a service names ZooKeeper
        # Connections whose session events we count (weak: a released one may go away).
        self._counted: weakref.WeakSet[ZooKeeperConnection] = weakref.WeakSet()
        self._etcd: dict[EtcdKey, LeaseKeeper] = {}
        self._etcd_users: dict[EtcdKey, int] = {}

    @property
    def zookeeper(self) -> ZooKeeperPool:
        if self._zookeeper is None:
            from smartstack.zookeeper import ZooKeeperPool

            self._zookeeper = ZooKeeperPool(self._loop)
        return self._zookeeper

    def reporter(
        self, service: str, cfg: ServiceConfig, instance_id: str, registration: Registration
    ) -> Reporter:
        if cfg.reporter_type == "etcd":
            from nerve.reporters.etcd import EtcdReporter

            return EtcdReporter(
                service, registration, self._keeper(cfg), cfg.etcd_path, self.metrics,
                hold_for=hold_bound(cfg),
            )  # fmt: skip
        from nerve.reporters.zookeeper import ZooKeeperReporter

        assert cfg.zk_hosts and cfg.zk_path  # the config model requires them
        auth = cfg.zk_auth.pair() if cfg.zk_auth else None
        conn = self.zookeeper.acquire(cfg.zk_hosts, cfg.zk_session_timeout, auth)
        self._count_sessions(conn)
        return ZooKeeperReporter(
            service,
            registration,
            conn,
            cfg.zk_path,
            instance_id=instance_id,
            node_type=cfg.node_type,
            use_path_encoding=cfg.use_path_encoding,
            ttl_seconds=cfg.ttl_seconds,
            acl=cfg.zk_auth.acl if cfg.zk_auth else "open",
            op_timeout=max(2.0, cfg.zk_session_timeout),
            metrics=self.metrics,
        )

    def _count_sessions(self, conn: ZooKeeperConnection) -> None:
        if conn in self._counted:
            return
        self._counted.add(conn)

        def on_state(state: str) -> None:
            if state in ("lost", "new_session"):
                self.metrics.reconnects.labels("zookeeper", state).inc()

        conn.add_listener(on_state)

    def _keeper(self, cfg: ServiceConfig) -> LeaseKeeper:
        key: EtcdKey = (
            tuple(cfg.etcd_endpoint_list()),
            cfg.etcd_user,
            cfg.etcd_password,
            cfg.etcd_tls,
            cfg.etcd_lease_ttl,
            cfg.etcd_transport_used(),
        )
        if key not in self._etcd:
            from nerve.reporters.etcd_lease import LeaseKeeper, call_timeout
            from nerve.reporters.etcd_leftover import LeftoverLeases

            # Imported here: only a connection on gRPC loads gRPC and aetcd (~13 MB).
            if key[-1] == "json":
                from smartstack.etcd_json_client import EtcdJsonKVConnection as Connection
            else:
                from smartstack.etcd import EtcdConnection as Connection
            conn = Connection(
                list(key[0]),
                cfg.etcd_user,
                cfg.etcd_password,
                timeout=call_timeout(cfg.etcd_lease_ttl),  # hung member left in time
                tls=cfg.etcd_tls,
            )
            keeper = LeaseKeeper(conn, cfg.etcd_lease_ttl, self.metrics)
            keeper.leftovers = LeftoverLeases(conn, lambda: keeper.lease_id)
            keeper.start()
            self._etcd[key] = keeper
            self._etcd_users[key] = 0
        self._etcd_users[key] += 1
        return self._etcd[key]

    async def release(self, reporter: Reporter) -> None:
        """The service is gone: drop its share of the connection (closed when unused)."""
        held: Any = reporter  # its kind says which connection it holds
        if reporter.kind == "zookeeper":
            await self.zookeeper.release(held.conn)
            return
        if reporter.kind == "etcd":
            for key, keeper in list(self._etcd.items()):
                if keeper is held.keeper:
                    self._etcd_users[key] -= 1
                    if self._etcd_users[key] <= 0:
                        del self._etcd[key], self._etcd_users[key]
                        with contextlib.suppress(Exception):
                            await keeper.close(revoke=True)

    async def close(self, left: Collection[Reporter] = ()) -> None:
        """Close every session: revoking leases and closing ZooKeeper sessions removes
        whatever registration a failed withdraw left behind. The sessions and leases that
        ``left``'s registrations stand on (a restart stop, nerve/restart_stop.py) are only
        disconnected: they expire by themselves unless the next nerve takes them over."""
        held: Any = left  # (their kind says which connection they stand on)
        kept_conns = frozenset(r.conn for r in held if r.kind == "zookeeper")
        kept_keepers = {id(r.keeper) for r in held if r.kind == "etcd"}
        keepers = list(self._etcd.values())
        self._etcd.clear()
        self._etcd_users.clear()
        await asyncio.gather(
            *(k.close(revoke=id(k) not in kept_keepers) for k in keepers),
            *([self._zookeeper.close_all(kept_conns)] if self._zookeeper is not None else []),
            return_exceptions=True,
        )
