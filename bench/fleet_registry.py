"""The fleet benchmark's registries: a 3-node ZooKeeper ensemble, a 3-member etcd cluster.

Records are written the way nerve writes them: ZooKeeper ephemeral sequential znodes
``<path>/<name>_<seq>`` holding nerve's JSON; etcd keys ``<path>/<name>_<host>_<port>``
attached to a lease (nerve keeps one lease per host alive). Both send a batch's writes at
once (ZooKeeper pipelined on one session, etcd from WRITERS threads), so both registries
see the same load: a synapse's CPU per write depends on how many writes land together
(one apply round each when they come one after the other; `python -m bench.fleet_cpu`).
The server side is read as an operator would: ZooKeeper's ``mntr`` four-letter word on
every member, etcd's /metrics on every member, and each member's CPU time from
/proc/<pid>/stat.
"""

from __future__ import annotations

import contextlib
import http.client
import itertools
import logging
import threading
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kazoo.client import KazooClient, KazooState
from kazoo.retry import KazooRetry

from bench.etcd_gateway import b64, post, record_key
from bench.prometheus_text import parse_prometheus
from bench.stack import Workspace, cpu_seconds
from smartstack.record import Registration, encode
from testbed.etcd import EtcdCluster
from testbed.zookeeper import ZooKeeperEnsemble, four_letter_word

# Server-side counters summed over the members (mntr keys; etcd metric names).
ZK_COUNTERS = ("zk_packets_received", "zk_packets_sent")
ZK_GAUGES = ("zk_num_alive_connections", "zk_watch_count", "zk_znode_count")
ETCD_COUNTERS = ("etcd_debugging_mvcc_range_total", "etcd_debugging_mvcc_events_total")
WRITERS = 10  # etcd writes in flight at once (the fleet's batches are 10 instances)
ETCD_GAUGES = ("etcd_debugging_mvcc_watcher_total", "etcd_debugging_mvcc_watch_stream_total")


class MemberCounters:
    """Counters summed over the members, asked all at once (a member not serving yet must
    not delay the others' sample by its timeout). A member that does not answer counts with
    its last answer, so the sum never dips and jumps back as a false burst."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=3, thread_name_prefix="bench-counters")
        self._last: dict[object, dict[str, float]] = {}

    def sum(self, members: dict[object, Callable[[], dict[str, float]]]) -> dict[str, float]:
        futures = {key: self._pool.submit(fetch) for key, fetch in members.items()}
        total: dict[str, float] = {}
        for key, future in futures.items():
            # Not serving (yet), or stopped mid-answer: its last answer stands.
            with contextlib.suppress(OSError, http.client.HTTPException, ValueError):
                self._last[key] = future.result()
            for name, value in self._last.get(key, {}).items():
                total[name] = total.get(name, 0.0) + value
        return total

    def forget(self) -> None:
        """The members restarted: their counters start again from zero."""
        self._last.clear()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class ZkFleet:
    kind = "zookeeper"

    def __init__(self, ws: Workspace, members: int = 3) -> None:
        self.ensemble = ZooKeeperEnsemble(members, workdir=ws.dir("zk"), tick_time=500)
        self._counters = MemberCounters()
        ws.callback(self.ensemble.stop)
        self.ensemble.start()
        # The writer's own reconnect chatter during the outage is not the benchmark's output.
        logging.getLogger("kazoo.client").setLevel(logging.ERROR)
        # The writer stands for the fleet's nerves: it reconnects as they do (backoff capped
        # at 1 s; smartstack.zookeeper caps at 2 s). kazoo's default doubles its wait up to
        # an hour: after the outage it could come back later than its session's timeout (10 s
        # here, 20 ticks), and its expired session would take every record of the fleet along.
        self.client = KazooClient(
            hosts=self.ensemble.hosts,
            timeout=30,
            connection_retry=KazooRetry(max_tries=-1, delay=0.1, backoff=2, max_delay=1.0),
        )
        self.sessions_lost = 0  # the writer's: its ephemeral records went with each
        self.client.add_listener(self._on_state)
        self.client.start(timeout=30)
        ws.callback(self.close)

    def _on_state(self, state: KazooState) -> None:
        if state == KazooState.LOST:
            self.sessions_lost += 1

    def held(self, path: str) -> int:
        """How many records the registry holds under ``path`` now."""
        if self.client.exists_async(path).get(timeout=5) is None:  # (no wait for a reconnect)
            return 0
        return len(self.client.get_children_async(path).get(timeout=5))

    def discovery(self, path: str) -> dict[str, Any]:
        return {"method": "zookeeper", "hosts": [self.ensemble.hosts], "path": path}

    def add_many(self, items: list[tuple[str, Registration]]) -> list[str]:
        """Each record its own create, all pipelined (many nerves registering at once)."""
        for parent in {p for p, _ in items}:
            self.client.ensure_path(parent)
        pending = [
            self.client.create_async(f"{p}/{r.name}_", encode(r), ephemeral=True, sequence=True)
            for p, r in items
        ]
        return [result.get(timeout=60) for result in pending]

    def remove_many(self, handles: list[str]) -> None:
        for result in [self.client.delete_async(h) for h in handles]:
            result.get(timeout=60)

    def counters(self) -> dict[str, float]:
        """mntr counters and gauges summed over the members."""
        return self._counters.sum(
            {m.client_port: (lambda m=m: self._mntr(m.client_port)) for m in self.ensemble.members}
        )

    @staticmethod
    def _mntr(port: int) -> dict[str, float]:
        out: dict[str, float] = {}
        for line in four_letter_word(port, "mntr", timeout=1).splitlines():
            key, _, value = line.partition("\t")
            if key in ZK_COUNTERS + ZK_GAUGES:
                try:
                    out[key] = float(value)
                except ValueError:
                    continue
        return out

    def connections(self) -> float:
        return self.counters().get("zk_num_alive_connections", 0.0)

    def cpu_seconds(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.ensemble.pids if pid)

    def stop_all(self) -> None:
        self.ensemble.stop()
        self._counters.forget()

    def start_all(self) -> None:
        self.ensemble.start(timeout=90)

    def close(self) -> None:
        self._counters.close()
        self.client.stop()
        self.client.close()


class EtcdFleet:
    kind = "etcd"

    def __init__(self, ws: Workspace, members: int = 3) -> None:
        self.cluster = EtcdCluster(
            members, workdir=ws.dir("etcd"), extra_args=["--max-txn-ops=1024"]
        )
        ws.callback(self.cluster.stop)
        self.cluster.start(timeout=60)
        self._counters = MemberCounters()
        ws.callback(self._counters.close)
        # One keep-alive connection per writer thread: a batch's writes go out at once, as
        # the ZooKeeper writer pipelines them (one call after the other spread a batch's
        # events over tens of ms, and every synapse then ran a round per write).
        self._local = threading.local()
        self._conns: list[http.client.HTTPConnection] = []
        self._writers = ThreadPoolExecutor(max_workers=WRITERS, thread_name_prefix="bench-etcd")
        ws.callback(self._close_writers)
        # One lease for the writer, long enough to outlive the run (nerve keeps its alive).
        self.lease = self._call("lease/grant", {"TTL": 900})["ID"]

    def discovery(self, path: str) -> dict[str, Any]:
        return {"method": "etcd", "endpoints": self.cluster.endpoints, "path": path}

    @property
    def conn(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = http.client.HTTPConnection("127.0.0.1", self.cluster.port, timeout=30)
            self._local.conn = conn
            self._conns.append(conn)
        return conn

    def _close_writers(self) -> None:
        self._writers.shutdown(wait=True)
        for conn in self._conns:
            conn.close()

    def _call(self, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        return post(lambda: self.conn, endpoint, body)

    key = staticmethod(record_key)

    def add_many(self, items: list[tuple[str, Registration]]) -> list[str]:
        """One put per record (each nerve writes its own key), all with the lease; up to
        WRITERS at once."""
        keys = [self.key(path, reg) for path, reg in items]
        bodies = [{"key": b64(key), "value": b64(encode(reg)), "lease": self.lease}
                  for key, (_, reg) in zip(keys, items, strict=True)]  # fmt: skip
        list(self._writers.map(lambda body: self._call("kv/put", body), bodies))
        return keys

    def remove_many(self, handles: list[str]) -> None:
        bodies = [{"key": b64(key)} for key in handles]
        list(self._writers.map(lambda body: self._call("kv/deleterange", body), bodies))

    sessions_lost = 0  # (the writer's lease outlives the run)

    def held(self, path: str) -> int:
        """How many records the registry holds under ``path`` now."""
        prefix = f"{path.rstrip('/')}/".encode()
        end = prefix[:-1] + bytes([prefix[-1] + 1])
        found = self._call("kv/range", {"key": b64(prefix), "range_end": b64(end),
                                        "count_only": True})  # fmt: skip
        return int(found.get("count", 0))

    def _metrics(self, url: str) -> dict[str, float]:
        with urllib.request.urlopen(f"{url}/metrics", timeout=2) as resp:
            metrics = parse_prometheus(resp.read().decode())
        out = {name: sum(v for _, v in metrics.get(name, [])) for name in ETCD_COUNTERS}
        out.update({name: sum(v for _, v in metrics.get(name, [])) for name in ETCD_GAUGES})
        for labels, value in metrics.get("grpc_server_handled_total", []):
            method = labels.get("grpc_method", "")
            out[f"grpc_handled_{method}"] = out.get(f"grpc_handled_{method}", 0.0) + value
        for labels, value in metrics.get("grpc_server_msg_received_total", []):
            method = labels.get("grpc_method", "")
            out[f"grpc_msg_received_{method}"] = out.get(f"grpc_msg_received_{method}", 0.0) + value
        return out

    def counters(self) -> dict[str, float]:
        members = self.cluster.members
        return self._counters.sum(
            {m.metrics_url: (lambda m=m: self._metrics(m.metrics_url)) for m in members}
        )

    def connections(self) -> float:
        return self.counters().get("etcd_debugging_mvcc_watch_stream_total", 0.0)

    def cpu_seconds(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.cluster.pids if pid)

    def stop_all(self) -> None:
        self.cluster.stop()
        self._counters.forget()

    def start_all(self) -> None:
        for member in self.cluster.members:
            member.start(self.cluster)
        self.cluster.wait_healthy(timeout=90)
        for conn in self._conns:  # (each reconnects on its next request)
            conn.close()


FleetRegistry = ZkFleet | EtcdFleet


def open_fleet_registry(ws: Workspace, kind: str, members: int = 3) -> FleetRegistry:
    if kind == "zookeeper":
        return ZkFleet(ws, members)
    if kind == "etcd":
        return EtcdFleet(ws, members)
    raise ValueError(f"unknown registry {kind!r} (zookeeper or etcd)")


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    """Counters' growth between two readings (a member restarted in between: its total)."""
    return {k: v - before.get(k, 0.0) if v >= before.get(k, 0.0) else v for k, v in after.items()}


def sample_until(
    fn: Any, seconds: float, interval: float = 0.1
) -> list[tuple[float, dict[str, float]]]:
    """(elapsed s, fn()) every `interval` for `seconds`: a bounded time series."""
    out = []
    started = time.monotonic()
    for _ in range(int(seconds / interval) + 1):
        out.append((time.monotonic() - started, fn()))
        time.sleep(max(0.0, interval - (time.monotonic() - started) % interval))
    return out


def burst(points: list[tuple[float, float]], tail: int = 30) -> dict[str, float | None]:
    """A cumulative counter sampled over time, minus its steady rate (sessions' pings).

    Rates, not steps: a sample can come late (a member not serving yet makes ``mntr`` wait
    out its timeout; a starved machine delays the sampler), and a late sample's step holds
    seconds of requests. The steady rate is the median rate of the last `tail` steps; what
    is above it is the burst. Returns its total, when 10 %, 50 % and 90 % of it had
    arrived, the highest rate over one step and the longest step (the resolution there).
    """
    steps = [(b[0], b[0] - a[0], b[1] - a[1]) for a, b in itertools.pairwise(points)]
    steps = [(t, dt, v) for t, dt, v in steps if dt > 0]
    if not steps:
        return {"excess": 0.0, "t10_s": None, "t50_s": None, "t90_s": None,
                "peak_per_s": 0.0, "longest_step_s": 0.0}  # fmt: skip
    recent = sorted(v / dt for _, dt, v in steps[-tail:])
    steady = recent[len(recent) // 2]
    excess = [(t, max(0.0, v - steady * dt)) for t, dt, v in steps]
    total = sum(v for _, v in excess)
    out: dict[str, float | None] = {
        "excess": total,
        "steady_per_s": steady,
        "peak_per_s": max(v / dt for _, dt, v in steps),
        "longest_step_s": max(dt for _, dt, _ in steps),
    }
    for share in (10, 50, 90):
        acc, when = 0.0, None
        for t, v in excess:
            acc += v
            if total and acc >= total * share / 100:
                when = t
                break
        out[f"t{share}_s"] = when
    return out
