"""Writing registrations straight into ZooKeeper or etcd, one at a time or by the thousand.

Records are encoded with ``smartstack.record.encode``, exactly as nerve writes them.
ZooKeeper: ephemeral sequential znodes ``<path>/<name>_<seq>`` (nerve's naming) through
kazoo; bulk loads use multi-op transactions. etcd: keys ``<path>/<name>_<host>_<port>``
(nerve's etcd key) through etcd's v3 JSON gateway on a keep-alive HTTP connection; bulk
loads are transactions. Bursts come from many sessions or connections, each change its
own request (bench.burst_writers: what many nerves would send). Both sides are plain
synchronous calls, so a benchmark times a write with nothing between its clock and the
wire.
"""

from __future__ import annotations

import contextlib
import http.client
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

from kazoo.client import KazooClient
from kazoo.exceptions import NodeExistsError

from bench.burst_writers import BurstWriter, EtcdBurstWriter, ZkBurstWriter
from bench.etcd_gateway import b64, post, record_key
from bench.observer import EtcdObserver, Observer, ZkObserver
from bench.stack import Workspace, etcd_discovery, listen_port, service_block, zk_discovery
from smartstack.record import Registration, encode, encode_child_prefix

Handle = str  # znode path or etcd key


class Registry(Protocol):
    kind: str

    def discovery(self, path: str) -> dict[str, Any]: ...
    def add(self, path: str, registration: Registration) -> Handle: ...
    def remove(self, handle: Handle) -> None: ...
    def observer(self, path: str) -> Observer: ...
    def load(self, items: list[tuple[str, Registration]]) -> list[Handle]: ...
    def burst_writer(self) -> BurstWriter: ...
    def pids(self) -> list[int]: ...
    def close(self) -> None: ...


def server(service_index: int, server_index: int, base_port: int = 20000) -> Registration:
    """The j-th fake server of service i: distinct 127.0.0.1 ports, nothing listens there."""
    return Registration(
        host="127.0.0.1", port=base_port + server_index, name=f"s{service_index}-{server_index}"
    )


class ZkRegistry:
    kind = "zookeeper"

    def __init__(self, ws: Workspace, path_encoding: bool = False) -> None:
        # nerve's use_path_encoding: the record also goes into the child's name, so synapse
        # learns it from the children list without reading each child.
        self.path_encoding = path_encoding
        self.server = ws.zookeeper()
        self.client = KazooClient(hosts=self.server.hosts, timeout=30)
        self.client.start(timeout=30)
        ws.callback(self.close)
        self._ws = ws
        self._parents: set[str] = set()

    def discovery(self, path: str) -> dict[str, Any]:
        return zk_discovery(self.server, path)

    def _ensure(self, paths: set[str]) -> None:
        missing = sorted(paths - self._parents)
        if not missing:
            return
        for parent in {p.rsplit("/", 1)[0] for p in missing if p.count("/") > 1}:
            self.client.ensure_path(parent)
        pending = [self.client.create_async(p, b"") for p in missing]
        for result in pending:
            with contextlib.suppress(NodeExistsError):
                result.get(timeout=30)
        self._parents.update(missing)

    def _name(self, path: str, registration: Registration) -> str:
        prefix = encode_child_prefix(registration) if self.path_encoding else None
        return f"{path}/{prefix or registration.name + '_'}"

    def add(self, path: str, registration: Registration) -> Handle:
        self._ensure({path})
        return self.client.create(
            self._name(path, registration), encode(registration), ephemeral=True, sequence=True
        )

    def remove(self, handle: Handle) -> None:
        self.client.delete(handle)

    def observer(self, path: str) -> ZkObserver:
        """An independent watcher on `path` (its own session), to time the registry's part."""
        self._ensure({path})
        return ZkObserver(self.server.hosts, path)

    def load(
        self, items: list[tuple[str, Registration]], batch: int = 500, window: int = 8
    ) -> list[Handle]:
        """Many records, fast: multi-op transactions, a few in flight at once."""
        self._ensure({path for path, _ in items})
        handles: list[Handle] = []
        inflight: deque = deque()

        def drain_one() -> None:
            for result in inflight.popleft().get(timeout=60):
                if isinstance(result, Exception):
                    raise result
                handles.append(result)

        for start in range(0, len(items), batch):
            txn = self.client.transaction()
            for path, reg in items[start : start + batch]:
                txn.create(self._name(path, reg), encode(reg), ephemeral=True, sequence=True)
            inflight.append(txn.commit_async())
            if len(inflight) >= window:
                drain_one()
        while inflight:
            drain_one()
        return handles

    def pids(self) -> list[int]:
        return [pid for pid in [self.server.pid] if pid]

    def burst_writer(self) -> ZkBurstWriter:
        """Sessions that write a burst as many nerves would (bench.burst_writers), connected
        now; closed with the workspace. The burst's paths must exist (``load`` made them)."""
        writer = ZkBurstWriter(self.server.hosts, self._name)
        self._ws.callback(writer.close)
        return writer

    def close(self) -> None:
        self.client.stop()
        self.client.close()


class EtcdRegistry:
    kind = "etcd"
    MAX_OPS = 1000  # the member runs with --max-txn-ops=1024

    def __init__(self, ws: Workspace) -> None:
        self.cluster = ws.etcd()
        self.conn = http.client.HTTPConnection("127.0.0.1", self.cluster.port, timeout=30)
        ws.callback(self.close)
        self._ws = ws

    def discovery(self, path: str) -> dict[str, Any]:
        return etcd_discovery(self.cluster, path)

    def _call(self, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        return post(lambda: self.conn, endpoint, body)

    key = staticmethod(record_key)

    def add(self, path: str, registration: Registration) -> Handle:
        key = self.key(path, registration)
        self._call("kv/put", {"key": b64(key), "value": b64(encode(registration))})
        return key

    def remove(self, handle: Handle) -> None:
        self._call("kv/deleterange", {"key": b64(handle)})

    def observer(self, path: str) -> EtcdObserver:
        """An independent watch on `path`'s prefix (its own stream), to time etcd's part."""
        return EtcdObserver(self.cluster.port, path)

    def _txn(self, ops: list[dict[str, Any]]) -> None:
        for start in range(0, len(ops), self.MAX_OPS):
            self._call("kv/txn", {"success": ops[start : start + self.MAX_OPS]})

    def load(self, items: list[tuple[str, Registration]]) -> list[Handle]:
        """Many records, fast: transactions of up to MAX_OPS puts."""
        keys = [self.key(p, r) for p, r in items]
        ops = [
            {"requestPut": {"key": b64(k), "value": b64(encode(r))}}
            for k, (_, r) in zip(keys, items, strict=True)
        ]
        self._txn(ops)
        return keys

    def pids(self) -> list[int]:
        return [pid for pid in self.cluster.pids if pid]

    def burst_writer(self) -> EtcdBurstWriter:
        """Connections that write a burst as many nerves would, one request per change
        (bench.burst_writers); closed with the workspace."""
        writer = EtcdBurstWriter(self.cluster.port, self.key)
        self._ws.callback(writer.close)
        return writer

    def range_reads(self) -> float | None:
        """Range reads etcd has served (its /metrics), to count the reads synapse makes: its
        mvcc count, which includes ranges batched inside a Txn (a Range-call count misses them)."""
        self.conn.request("GET", "/metrics")
        resp = self.conn.getresponse()
        text = resp.read().decode()
        total = 0.0
        for line in text.splitlines():
            if line.startswith("etcd_debugging_mvcc_range_total"):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def close(self) -> None:
        self.conn.close()


@dataclass
class Fleet:
    """services x servers records loaded into a registry, and what HAProxy should then serve."""

    registry: Registry
    prefix: str
    handles: dict[str, list[Handle]] = field(default_factory=dict)
    expected: dict[str, set[tuple[str, int]]] = field(default_factory=dict)
    write_s: float = 0.0

    @property
    def size(self) -> int:
        return sum(len(v) for v in self.expected.values())

    def path(self, service: str) -> str:
        return f"{self.prefix}/{service}"

    def synapse_services(self, ports: bool = True) -> dict[str, dict[str, Any]]:
        """One synapse service per fleet service, each with its own frontend port if `ports`."""
        return {
            name: service_block(
                self.registry.discovery(self.path(name)), listen_port() if ports else None
            )
            for name in self.expected
        }


def load_fleet(
    registry: Registry,
    services: int,
    servers: int,
    prefix: str = "/bench/fleet",
    base_port: int = 20000,
) -> Fleet:
    """Write services x servers records (service i is `svc<i>`) as fast as the registry takes."""
    fleet = Fleet(registry, prefix)
    items = []
    for i in range(services):
        name = f"svc{i}"
        regs = [server(i, j, base_port) for j in range(servers)]
        items += [(fleet.path(name), r) for r in regs]
        fleet.expected[name] = {(r.host, r.port) for r in regs}
    started = time.perf_counter()
    handles = registry.load(items)
    fleet.write_s = time.perf_counter() - started
    for (path, _), handle in zip(items, handles, strict=True):
        fleet.handles.setdefault(path.rsplit("/", 1)[1], []).append(handle)
    return fleet


def open_registry(ws: Workspace, kind: str) -> Registry:
    if kind == "zookeeper":
        return ZkRegistry(ws)
    if kind == "zookeeper+path_encoding":
        return ZkRegistry(ws, path_encoding=True)
    if kind == "etcd":
        return EtcdRegistry(ws)
    raise ValueError(f"unknown registry {kind!r} (zookeeper, zookeeper+path_encoding or etcd)")
