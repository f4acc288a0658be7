"""nerve's start and memory: a process spawned → its service registered, and its RSS.

nerve runs on every host, beside every service instance. How fast a (re)started nerve
registers decides whether a restart fits inside the previous run's etcd lease (2 s at the
least: nerve holds the leftover key meanwhile) and how soon a new host takes traffic; its
RSS is paid once per host. Each run spawns a real nerve (admin API on, one service, a TCP
check with rise 1 against a listening port, the real registry on loopback), times until
the registration is visible in the registry (polled every 5 ms by this process), reads
VmRSS a second later, stops it with SIGTERM and waits for the registration to go.

A host often runs many services behind one nerve: one more run spawns a nerve with 500
(`--quick`: 50) TCP services against ZooKeeper and times until every one is registered
(ZooKeeper's own count of ephemeral nodes, `mntr`, polled every 50 ms: one request however
many services), with nerve's CPU time at that moment (/proc: a start's cost, which a
loaded host turns into seconds).
"""

from __future__ import annotations

import base64
import os
import socket
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from kazoo.client import KazooClient

from bench import Options
from bench.registry import EtcdRegistry
from bench.report import Result, Target
from bench.stack import Nerve, Workspace, rss_kib
from bench.zk_stats import parse_mntr
from testbed.zookeeper import four_letter_word

NAME = "nerve"
# Half the shortest etcd lease nerve accepts (2 s): a restart then fits inside what is left
# of the previous run's lease.
TARGET_START_S = Target("<=", 1.0, "s")
# A sidecar synapse's goal (issue 15): nerve is on every host too.
TARGET_RSS_MB = Target("<=", 35, "MB")
POLL_S = 0.005
PATH = "/nerve-bench/web"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _zookeeper(ws: Workspace) -> tuple[dict[str, object], Callable[[], bool]]:
    server = ws.zookeeper()
    client = KazooClient(hosts=server.hosts, timeout=30)
    client.start(timeout=30)
    ws.callback(client.stop)
    block = {"reporter_type": "zookeeper", "zk_hosts": [server.hosts], "zk_path": PATH}
    return block, lambda: bool(client.exists(PATH) and client.get_children(PATH))


def _etcd(ws: Workspace) -> tuple[dict[str, object], Callable[[], bool]]:
    registry = EtcdRegistry(ws)
    block = {"reporter_type": "etcd", "etcd_endpoints": registry.cluster.endpoints,
             "etcd_path": PATH}  # fmt: skip
    prefix = f"{PATH}/".encode()
    ask = {"key": _b64(prefix), "range_end": _b64(prefix[:-1] + b"0"), "count_only": True}
    return block, lambda: int(registry._call("kv/range", ask).get("count", 0)) > 0


REGISTRIES = {"zookeeper": _zookeeper, "etcd": _etcd}


def _until(predicate: Callable[[], bool], want: bool, timeout: float, what: str) -> float:
    began = time.monotonic()
    while predicate() != want:
        if time.monotonic() - began > timeout:
            raise TimeoutError(f"{what} after {timeout:.0f} s")
        time.sleep(POLL_S)
    return time.monotonic() - began


def measure(ws: Workspace, kind: str, runs: int) -> dict[str, list[float]]:
    block, registered = REGISTRIES[kind](ws)
    listener = socket.create_server(("127.0.0.1", 0), backlog=64)
    ws.callback(listener.close)
    check = {"type": "tcp", "rise": 1, "fall": 2, "timeout": 0.5}
    service = {"host": "127.0.0.1", "port": listener.getsockname()[1], "check_interval": 0.5,
               "checks": [check], **block}  # fmt: skip
    starts, rss = [], []
    for run in range(runs):
        nerve = Nerve(ws, f"{kind}-{run}", {"web": service})
        began = time.monotonic()
        nerve.start()
        assert nerve.proc is not None
        _until(registered, True, 30, f"no registration in {kind}\n{nerve.logs()}")
        starts.append(time.monotonic() - began)
        time.sleep(1.0)  # (settled: the first check rounds, the admin API's first answers)
        rss.append(rss_kib(nerve.proc.pid)["VmRSS"] / 1024)
        nerve.proc.stop(timeout=10)
        _until(registered, False, 30, f"the registration stayed in {kind}")
    return {"start_s": starts, "rss_mb": rss}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure_many(ws: Workspace, count: int) -> dict[str, float]:
    """One nerve with ``count`` TCP services on ZooKeeper: spawned → all registered."""
    server = ws.zookeeper()
    listeners = [socket.create_server(("127.0.0.1", 0), backlog=64) for _ in range(count)]
    for listener in listeners:
        ws.callback(listener.close)
    check = {"type": "tcp", "rise": 1, "fall": 2, "timeout": 0.5}
    services = {f"s{i}": {"host": "127.0.0.1", "port": listener.getsockname()[1],
                          "check_interval": 1.0, "checks": [check],
                          "reporter_type": "zookeeper", "zk_hosts": [server.hosts],
                          "zk_path": f"{PATH}-many/s{i}"}
                for i, listener in enumerate(listeners)}  # fmt: skip

    def ephemerals() -> int:
        return int(parse_mntr(four_letter_word(server.port, "mntr")).get("zk_ephemerals_count", 0))

    nerve = Nerve(ws, "many", services)
    began = time.monotonic()
    nerve.start()
    assert nerve.proc is not None
    first = all_in = None
    while all_in is None:
        registered = ephemerals()
        now = time.monotonic() - began
        if first is None and registered:
            first = now
        if registered >= count:
            all_in = now
        elif now > 120:
            raise TimeoutError(f"{registered} of {count} registered after 120 s\n{nerve.logs()}")
        time.sleep(0.05)
    cpu = cpu_seconds(nerve.proc.pid)
    nerve.proc.stop(timeout=30)
    return {"first_s": first or all_in, "all_s": all_in, "cpu_s": cpu}


def run(opts: Options) -> Result:
    runs = opts.size(7, 2)
    result = Result(NAME, params={"runs": runs, "registries": opts.registries})
    with Workspace(keep=opts.keep) as ws:
        for kind in opts.registries:
            title = f"{kind}, {runs} starts"
            if not opts.wants(title):
                continue
            with result.attempt(title):
                figures = measure(ws, kind, runs)
                result.figures[kind] = figures
                section = result.section(title)
                starts = figures["start_s"]
                section.add("spawned → registered, median", statistics.median(starts), "s",
                            TARGET_START_S)  # fmt: skip
                section.add("spawned → registered, max", max(starts), "s")
                section.add("RSS, median", statistics.median(figures["rss_mb"]), "MB",
                            TARGET_RSS_MB)  # fmt: skip
        many = opts.size(500, 50)
        title = f"zookeeper, many services: one nerve with {many}"
        if "zookeeper" in opts.registries and opts.wants(title):
            with result.attempt(title):
                figures = measure_many(ws, many)
                result.figures["many"] = figures
                section = result.section(title)
                section.add("spawned → first registered", figures["first_s"], "s")
                section.add(f"spawned → all {many} registered", figures["all_s"], "s")
                section.add("nerve's CPU time until then", figures["cpu_s"], "s")
    return result
