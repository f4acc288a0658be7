"""`python -m bench.faults [--quick] [--only NAME ...]`: the reliability suite -> RELIABILITY.md.

Real servers, real faults, a bounded client load through HAProxy. Two stacks: a
3-member ZooKeeper ensemble and a 3-member etcd cluster, each with two HTTP backends
registered by their own nerve and one synapse (managed HAProxy, a frontend for the
service). Every scenario (bench/faults_scenarios.py) runs inside its own load window
(bench/paced.py: 4 threads, one GET each every 20 ms on a new connection, 127.0.0.1
only, bounded in time) and reports: failed requests of all sent (refused, reset, timed
out or not 2xx/3xx), how long requests kept failing, seconds until the stack recovered,
the registrations kept (the two real ones, in the registry and serving in HAProxy,
nothing else in the backend) and the HAProxy reloads it caused.

The figures go to bench/results/faults/faults.json (a subdirectory, so BENCHMARKS.md's
generator does not pick them up) and to RELIABILITY.md, written with bench.markdown.
``--quick`` shortens every scenario (all ZooKeeper or etcd members down 10 s instead of 60 s,
1,000 hostile records instead of 10,000); the file says which mode wrote it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from bench.failure import FAILURE_DEFAULTS
from bench.markdown import render
from bench.paced import PacedClient, PacedResult
from bench.prometheus_text import metric_sum
from bench.report import REPO, RESULTS_DIR, Result, Target, fmt_number, write_json
from bench.stack import (
    Backend,
    Nerve,
    Synapse,
    Workspace,
    etcd_discovery,
    listen_port,
    nerve_http_service,
    service_block,
    wait_for,
    zk_discovery,
)
from testbed.etcd import EtcdCluster
from testbed.zookeeper import ZooKeeperEnsemble

NAME = "faults"
SERVICE = "web"
PATH = "/faults/web"
REPORT = REPO / "RELIABILITY.md"
FAULT_RESULTS = RESULTS_DIR / "faults"
CHECK_INTERVAL, RISE, FALL = 0.5, 2, 2
ZK_SESSION_S = 3.0  # nerve's zk_session_timeout here: expiry scenarios wait past it
ETCD_LEASE_S = 2  # nerve's etcd_lease_ttl (its minimum)
OUT_OF_HAPROXY_MAX_S = 0.02  # a healthy instance's absence: at most a few polls of 5 ms


@dataclass
class Figures:
    """What one scenario reports (one row of RELIABILITY.md's summary)."""

    scenario: str
    failed: int = 0
    total: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    failing_s: float = 0.0  # first to last failed request
    recover_s: float | None = None
    recover_what: str = ""
    registrations: str = ""
    reloads: int | None = None
    expect_zero: bool = True  # 0 failed requests is already the expected figure
    out_of_haproxy_s: float | None = None  # the longest a healthy instance was not served
    slowest_s: float = 0.0  # the longest an answered request of the load took
    extra: dict[str, tuple[float | int, str]] = field(default_factory=dict)  # name: value, unit
    notes: list[str] = field(default_factory=list)


class FaultStack:
    """Registry + two (backend, nerve) pairs + synapse with a frontend, in one workspace."""

    def __init__(self, ws: Workspace, kind: str, log_level: str) -> None:
        self.ws, self.kind, self.log_level = ws, kind, log_level
        self.backends = [Backend(ws, f"{kind}-b{i}").start() for i in range(2)]
        if kind == "zookeeper":
            self.zk = ZooKeeperEnsemble(3, workdir=ws.dir("zk"), tick_time=500)
            ws.callback(self.zk.stop)
            self.zk.start()
            discovery = zk_discovery(self.zk, PATH)  # type: ignore[arg-type]
        else:
            self.etcd = EtcdCluster(3, workdir=ws.dir("etcd"))
            ws.callback(self.etcd.stop)
            self.etcd.start()
            discovery = etcd_discovery(self.etcd, PATH)
        self.nerves = [
            Nerve(ws, f"host{i}", {SERVICE: self._nerve_service(b)}, log_level).start()
            for i, b in enumerate(self.backends)
        ]
        self.port = listen_port()
        self.synapse = Synapse(
            ws,
            {SERVICE: service_block(discovery, self.port)},
            log_level=log_level,
            name=f"synapse-{kind}",
            extra={"haproxy": {"defaults": FAILURE_DEFAULTS}},
        ).start()
        self.want = {("127.0.0.1", b.port) for b in self.backends}
        self.wait_healthy(60, "both backends registered and serving")

    def _nerve_service(self, backend: Backend) -> dict[str, Any]:
        if self.kind == "zookeeper":
            service = nerve_http_service(self.zk, PATH, backend.port, CHECK_INTERVAL, RISE, FALL)  # type: ignore[arg-type]
            service["zk_session_timeout"] = ZK_SESSION_S
            return service
        no_zk = SimpleNamespace(hosts="")  # its zk_* keys are dropped next
        service = nerve_http_service(no_zk, PATH, backend.port, CHECK_INTERVAL, RISE, FALL)  # type: ignore[arg-type]
        for key in ("zk_hosts", "zk_path"):
            service.pop(key)
        service |= {
            "reporter_type": "etcd",
            "etcd_endpoints": self.etcd.endpoints,
            "etcd_path": PATH,
            "etcd_lease_ttl": ETCD_LEASE_S,
        }
        return service

    # --- what the stack looks like ------------------------------------------------------

    def registered(self) -> int:
        """The real registrations (one per nerve) in the registry now."""
        if self.kind == "zookeeper":
            from kazoo.client import KazooClient

            client = KazooClient(hosts=self.zk.hosts, timeout=5)
            client.start(timeout=5)
            try:
                children = client.get_children(PATH)
            finally:
                client.stop()
                client.close()
            return sum(c.startswith(f"{n.instance_id}_") for c in children for n in self.nerves)
        return etcd_count(self.etcd, PATH)

    def serving(self) -> set[tuple[str, int]]:
        return self.synapse.haproxy.serving(SERVICE).get(SERVICE, set())

    def backend_servers(self) -> int:
        """Every server line in the backend, serving or not (hostile records add none)."""
        return len(self.synapse.haproxy.servers(SERVICE))

    def healthy(self) -> bool:
        return self.serving() == self.want and self.registered() == len(self.nerves)

    def wait_healthy(self, timeout: float, what: str) -> None:
        watch = [self.synapse.proc, *(n.proc for n in self.nerves)]
        wait_for(self.healthy, timeout, what, watch, interval=0.05)

    def reloads(self) -> int:
        # A restarted synapse finds HAProxy running before its admin endpoint is up.
        metrics = wait_for(self.synapse.metrics, 30, "synapse's /metrics", [self.synapse.proc])
        value = metric_sum(metrics, "synapse_haproxy_reloads_total")
        return int(value or 0)

    def answers(self) -> bool:
        """One GET through the frontend answers 200."""
        url = f"http://127.0.0.1:{self.port}/"
        with urllib.request.urlopen(url, timeout=0.5) as resp:
            return resp.status == 200

    @contextmanager
    def window(self, figures: Figures, settle_s: float = 1.0) -> Iterator[None]:
        """A load window around a fault: wrk before, during and `settle_s` after it; then
        wait for the stack to be whole again and fill in the figures."""
        self.wait_healthy(90, f"a healthy stack before {figures.scenario}")
        pid, before = self.synapse.pid, self.reloads()
        client = PacedClient(self.port, max_duration_s=400).start()
        load: PacedResult | None = None
        try:
            time.sleep(0.5)
            yield
            time.sleep(settle_s)
        finally:
            load = client.finish()
        figures.failed, figures.total = load.failed, load.attempts
        figures.errors, figures.failing_s = load.errors, load.outage_s
        figures.slowest_s = load.slowest_s
        self.wait_healthy(90, f"the stack whole again after {figures.scenario}")
        kept = self.registered()
        extra = self.backend_servers() - len(self.want)
        figures.registrations = f"{kept}/{len(self.nerves)}" + (
            f", {extra} extra servers in HAProxy" if extra else ""
        )
        after = self.reloads()
        figures.reloads = after - before if self.synapse.pid == pid else after


def etcd_count(cluster: EtcdCluster, prefix: str) -> int:
    """Keys under `prefix` (count only), from the first member that answers."""
    import base64
    import http.client

    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    start = prefix.rstrip("/") + "/"
    end = start[:-1] + chr(ord(start[-1]) + 1)
    body = json.dumps({"key": b64(start), "range_end": b64(end), "count_only": True})
    last: Exception | None = None
    for endpoint in cluster.endpoints:
        host, port = endpoint.rsplit(":", 1)
        conn = http.client.HTTPConnection(host.split("//")[-1], int(port), timeout=2)
        try:
            conn.request("POST", "/v3/kv/range", body, {"Content-Type": "application/json"})
            resp = conn.getresponse()
            if resp.status == 200:
                return int(json.loads(resp.read()).get("count", 0))
        except OSError as exc:
            last = exc
        finally:
            conn.close()
    raise RuntimeError(f"no etcd member answered a range read ({last!r})")


def timed(predicate: Callable[[], object], timeout: float, what: str) -> float:
    """Seconds until `predicate` holds (polled every 5 ms; exceptions count as "not yet")."""
    began = time.perf_counter()
    wait_for(predicate, timeout, what, interval=0.005)
    return time.perf_counter() - began


def send(pid: int, sig: signal.Signals) -> None:
    os.kill(pid, sig)


# --------------------------------------------------------------------------- report


def to_result(figures: list[Figures], quick: bool, failures: list[str]) -> Result:
    load = "4 threads x 1 GET / 20 ms, new connection each (~200 req/s)"
    result = Result(NAME, params={"quick": quick, "load": load})
    for f in figures:
        section = result.section(f.scenario)
        note = ", ".join(f"{k} {v}" for k, v in f.errors.items())
        section.add(
            "failed requests",
            f.failed,
            target=Target("==", 0) if f.expect_zero else None,
            note=f"of {f.total:,}" + (f": {note}" if note else ""),
        )
        if f.recover_s is not None:
            section.add(f"seconds to recover ({f.recover_what})", round(f.recover_s, 3), "s")
        if f.failed:
            section.add("requests failing for", round(f.failing_s, 3), "s", note="first to last")
        section.add("registrations kept", f.registrations)
        if f.out_of_haproxy_s is not None:
            section.add("a healthy instance out of HAProxy", round(f.out_of_haproxy_s, 3), "s",
                        target=Target("<=", OUT_OF_HAPROXY_MAX_S))  # fmt: skip
        section.add("HAProxy reloads", f.reloads)
        for name, (value, unit) in f.extra.items():  # a scenario's own figures
            section.add(name, value, unit)
    for f in figures:
        result.notes += [f"{f.scenario}: {n}" for n in f.notes]
    result.failures = list(failures)
    result.figures["scenarios"] = [f.__dict__ for f in figures]
    return result


def summary(figures: list[Figures]) -> str:
    """One line per scenario: the table at the top of RELIABILITY.md."""
    out = [
        "| scenario | failed / sent | failing for | recovered in | registrations kept | reloads |"
    ]
    out.append("| --- | ---: | ---: | ---: | --- | ---: |")
    for f in figures:
        recover = "-" if f.recover_s is None else f"{fmt_number(f.recover_s)} s ({f.recover_what})"
        failed = f"{f.failed:,} / {f.total:,}" + ("" if f.expect_zero else " (not yet 0)")
        kept = f.registrations
        if f.out_of_haproxy_s is not None:
            kept += f" (a healthy one out of HAProxy {f.out_of_haproxy_s:.3f} s)"
        out.append(
            f"| {f.scenario} | {failed} | {fmt_number(f.failing_s)} s | {recover} | "
            f"{kept} | {fmt_number(f.reloads)} |"
        )
    return "\n".join(out) + "\n"


def write_report(path: Path, payload: dict[str, Any], figures: list[Figures]) -> None:
    mode = "QUICK (each scenario shortened)" if payload["quick"] else "full"
    head = [
        "# Reliability",
        "",
        "Written by `make faults` (`python -m bench.faults`); do not edit by hand.",
        f"Mode of this run: **{mode}**. Scenarios: bench/faults_scenarios.py.",
        "",
        summary(figures),
        "## Details",
        "",
    ]
    path.write_text("\n".join(head) + render([payload]))


def main(argv: list[str] | None = None) -> int:
    from bench.faults_scenarios import SCENARIOS, run_all

    parser = argparse.ArgumentParser(
        prog="python -m bench.faults",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="every scenario shortened (< 3 min)")
    parser.add_argument("--only", nargs="*", choices=list(SCENARIOS), help="these scenarios only")
    parser.add_argument("--keep", action="store_true", help="keep workspaces (configs, logs)")
    parser.add_argument("--results-dir", type=Path, default=FAULT_RESULTS)
    parser.add_argument("--report", type=Path, default=REPORT, help="the Markdown file to write")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    args = parser.parse_args(argv)
    began, load_before = time.monotonic(), os.getloadavg()[0]
    figures, failures = run_all(args.only or list(SCENARIOS), args.quick, args.keep, args.log_level)
    result = to_result(figures, args.quick, failures)
    result.duration_s = time.monotonic() - began
    result.load_average = {"before": load_before, "after": os.getloadavg()[0]}
    json_path = write_json(result, args.quick, args.results_dir)
    write_report(args.report, json.loads(json_path.read_text()), figures)
    print(summary(figures))
    print(f"-> {json_path}, {args.report} ({result.duration_s:.0f} s)")
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    return 1 if failures or result.missed() else 0


if __name__ == "__main__":
    sys.exit(main())
