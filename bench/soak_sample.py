"""What the soak samples each period: /proc of every daemon, /metrics series, wrk segments.

A sample is a plain dict (it goes as it is into the result's JSON): ``t`` (seconds since the
soak began), ``daemons`` ({name: {pid, rss_kib, threads, fds, cpu_s[, series]}}: synapse,
host0..2 (the nerves), haproxy_master and haproxy_worker (the current worker; after a reload
or a crash it is a new process) and ``load`` (wrk's requests and failures since the last
sample). A daemon that cannot be read (HAProxy between a crash and its restart) is absent.
"""

from __future__ import annotations

import contextlib
import os
import time
import urllib.request
from typing import Any

from bench.load import LoadResult, Wrk
from bench.prometheus_text import parse_prometheus
from bench.soak_churn import LOADED, Stack
from bench.stack import cpu_seconds, rss_kib
from testbed.haproxy import parse_show_proc

# Each service's load: 2 connections pausing 20 ms, about 100 requests/s (300 in all): enough
# to keep HAProxy's and the backends' connection paths busy, little CPU on 2 shared cores.
CONNECTIONS, DELAY_MS = 2, 20


def process(pid: int) -> dict[str, Any] | None:
    """pid, VmRSS, threads, open fds and CPU seconds of a process; None once it is gone (a
    zombie has no VmRSS)."""
    try:
        rss = rss_kib(pid)["VmRSS"]
        return {
            "pid": pid,
            "rss_kib": rss,
            "threads": len(os.listdir(f"/proc/{pid}/task")),
            "fds": len(os.listdir(f"/proc/{pid}/fd")),
            "cpu_s": round(cpu_seconds(pid), 2),
        }
    except (OSError, KeyError):
        return None


def series(admin_port: int) -> int:
    """How many samples the daemon's /metrics holds (a label set ever seen that is never
    dropped shows up here)."""
    url = f"http://127.0.0.1:{admin_port}/metrics"
    with urllib.request.urlopen(url, timeout=2) as resp:
        metrics = parse_prometheus(resp.read().decode())
    return sum(len(samples) for samples in metrics.values())


def haproxy_pids(stack: Stack) -> tuple[int | None, list[int]]:
    """(master, current workers) from the master CLI's `show proc`; (None, []) while there is
    no master to ask (a killed worker takes its master down; synapse starts a new one)."""
    try:
        pids = parse_show_proc(stack.synapse.haproxy.master("show proc", retry_s=2))
    except OSError:
        return None, []
    return (pids["master"] or [None])[0], pids["workers"]


def daemons(stack: Stack) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    admin = {"synapse": (stack.synapse.pid, stack.synapse.admin_port)}
    for i, host in enumerate(stack.hosts):
        admin[f"host{i}"] = (host.nerve.proc.pid, host.nerve.admin_port)
    for name, (pid, port) in admin.items():
        figures = process(pid)
        if figures is None:
            continue
        with contextlib.suppress(OSError):  # a stopped nerve does not answer: left out
            figures["series"] = series(port)
        out[name] = figures
    master, workers = haproxy_pids(stack)
    if master is not None and (figures := process(master)) is not None:
        out["haproxy_master"] = figures
    current = [f for f in map(process, workers) if f is not None]
    if current:  # one worker in HAProxy 2.6; summed should there ever be more
        worker = dict(current[0])
        for key in ("rss_kib", "threads", "fds", "cpu_s"):
            worker[key] = sum(f[key] for f in current)
        out["haproxy_worker"] = worker
    return out


class Load:
    """wrk on each loaded frontend, cut into one run per sample period (so failures can be
    placed in time). Each run is bounded by wrk's own -d as well as by ``cut``."""

    def __init__(self, stack: Stack, period_s: float) -> None:
        self.stack = stack
        self.max_s = period_s + 60  # wrk's own bound should the soak's loop stall
        self.runs: list[Wrk] = []

    def start(self) -> None:
        self.runs = []
        for name in LOADED:
            workdir = self.stack.ws.dir(f"wrk-{name}")
            url = f"http://127.0.0.1:{self.stack.ports[name]}/"
            wrk = Wrk(url, workdir, self.max_s, CONNECTIONS, 1, timeout_s=2, delay_ms=DELAY_MS)
            self.runs.append(wrk.start())

    def cut(self, restart: bool = True) -> dict[str, Any]:
        """Stop the runs, add their counts up, start the next ones (unless ``restart``)."""
        results: list[LoadResult] = [wrk.finish() for wrk in self.runs]
        self.runs = []
        if restart:
            self.start()
        errors = {k: sum(r.errors[k] for r in results) for k in results[0].errors}
        return {
            "requests": sum(r.requests for r in results),
            "failed": sum(r.failed for r in results),
            "errors": errors,
        }

    def kill(self) -> None:
        for wrk in self.runs:
            wrk.kill()


def take(stack: Stack, began: float, load: dict[str, Any] | None) -> dict[str, Any]:
    """One sample, ``t`` from ``began`` (time.monotonic())."""
    return {"t": round(time.monotonic() - began, 1), "daemons": daemons(stack), "load": load}
