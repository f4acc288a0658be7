"""Churn under load: every backend rolling-restarted through nerve while wrk sends traffic.

Four backends (bench/backend.py processes), each with its own nerve (one "host" each)
registering it in ZooKeeper with an HTTP check; synapse runs HAProxy with one frontend.
wrk keeps a steady load on the frontend (fixed connections, each pausing between
requests). Every backend in turn: nerve withdraws it (its `maintenance_file` appears),
HAProxy stops sending it traffic, a short drain, SIGTERM (graceful stop), start on the same
port, the flag file goes away and nerve re-registers it once its check passes `rise`
times; the next backend starts once HAProxy serves this one again.
The same run twice: synapse's runtime mode, then `do_socket: false` (a reload for each
change, `restart_interval` apart: the peers' way). Failed requests are wrk's socket errors
plus non-2xx answers.
"""

from __future__ import annotations

import time

from bench import Options
from bench.load import Wrk, under_load
from bench.report import Result, Target, summary_ms
from bench.stack import (
    Backend,
    DaemonError,
    Nerve,
    Synapse,
    Workspace,
    listen_port,
    mode_name,
    nerve_http_service,
    service_block,
    wait_for,
    zk_discovery,
)

NAME = "churn"
SERVICE = "web"
PATH = "/bench/web"
TARGET_FAILED = Target("==", 0)
CHECK_INTERVAL, RISE, FALL = 0.25, 2, 2
DRAIN_S = 0.5
CONNECTIONS, DELAY_MS = 16, 8  # at most 2,000 requests/s (about 1,700 here)
LOAD_S, LOAD_S_QUICK = 20, 5  # the load window around one rolling restart


def _serving(syn: Synapse) -> set[tuple[str, int]]:
    return syn.haproxy.serving(SERVICE).get(SERVICE, set())


def rolling_restart(
    syn: Synapse, backends: list[Backend], flags: list, drain_s: float, watch: list
) -> dict[str, list[float]]:
    """Restart every backend in turn; how long withdrawal and return took to reach HAProxy."""
    timings: dict[str, list[float]] = {"withdraw_to_haproxy": [], "up_to_haproxy": []}
    for backend, flag in zip(backends, flags, strict=True):
        address = ("127.0.0.1", backend.port)
        started = time.perf_counter()
        flag.write_text("rolling restart\n")
        wait_for(
            lambda a=address: a not in _serving(syn),
            60,
            f"HAProxy to stop serving {backend.name} after nerve's withdrawal",
            watch,
        )
        timings["withdraw_to_haproxy"].append(time.perf_counter() - started)
        time.sleep(drain_s)
        backend.stop()
        backend.start()
        started = time.perf_counter()
        flag.unlink()
        wait_for(
            lambda a=address: a in _serving(syn),
            60,
            f"HAProxy to serve {backend.name} again after nerve re-registered it",
            watch,
        )
        timings["up_to_haproxy"].append(time.perf_counter() - started)
    return timings


def scenario(opts: Options, runtime: bool, backends_n: int, result: Result) -> None:
    with Workspace(opts.keep) as ws:
        zk = ws.zookeeper()
        backends = [Backend(ws, f"b{i}").start() for i in range(backends_n)]
        flags = [ws.path / f"maint-b{i}" for i in range(backends_n)]
        nerves = [
            Nerve(
                ws,
                f"host{i}",
                {SERVICE: nerve_http_service(zk, PATH, b.port, CHECK_INTERVAL, RISE, FALL, flag)},
                opts.log_level,
            ).start()
            for i, (b, flag) in enumerate(zip(backends, flags, strict=True))
        ]
        port = listen_port()
        syn = Synapse(
            ws,
            {SERVICE: service_block(zk_discovery(zk, PATH), port)},
            runtime=runtime,
            restart_interval=opts.restart_interval,
            log_level=opts.log_level,
        ).start()
        watch = [syn.proc, *(n.proc for n in nerves)]
        want = {("127.0.0.1", b.port) for b in backends}
        wait_for(
            lambda: _serving(syn) == want,
            60,
            f"HAProxy to serve all {backends_n} backends registered by nerve",
            watch,
        )
        wrk = Wrk(
            f"http://127.0.0.1:{port}/",
            ws.dir("wrk"),
            max_duration_s=300,
            connections=CONNECTIONS,
            delay_ms=DELAY_MS,
        )
        with under_load(syn, wrk, opts.restart_interval) as measured:
            load_began = time.perf_counter()
            time.sleep(1.0)  # steady state before the first restart
            began = time.perf_counter()
            timings = rolling_restart(syn, backends, flags, DRAIN_S, watch)
            restart_s = time.perf_counter() - began
            # Both modes get the same load window (unless a restart outlasts it), so their
            # latency percentiles compare like with like.
            load_s = opts.size(LOAD_S, LOAD_S_QUICK)
            time.sleep(max(1.0, load_began + load_s - time.perf_counter()))
        load, reloads = measured.load, measured.reloads
        assert load is not None
        if load.requests == 0:
            raise DaemonError(f"wrk completed no request through HAProxy\n{syn.logs()}")

    mode = mode_name(runtime)
    section = result.section(mode)
    section.add("requests", load.requests, note=f"{load.rate:,.0f}/s for {load.duration_s:.1f} s")
    section.add(
        "failed requests",
        load.failed,
        target=TARGET_FAILED if runtime else None,
        note=", ".join(f"{k} {v}" for k, v in load.errors.items() if v),
    )
    section.add("failed share", 100.0 * load.failed / load.requests, "%")
    section.add("latency p50", load.p50_ms, "ms")
    section.add("latency p99", load.p99_ms, "ms")
    section.add("latency max", load.max_ms, "ms")
    section.add("HAProxy reloads", reloads)
    withdraw = summary_ms(timings["withdraw_to_haproxy"])
    back = summary_ms(timings["up_to_haproxy"])
    section.add("withdraw -> out of HAProxy (max)", withdraw["max_ms"], "ms")
    section.add(
        "flag removed -> back in HAProxy (max)",
        back["max_ms"],
        "ms",
        note=f"nerve checks every {CHECK_INTERVAL} s",
    )
    section.add("rolling restart of all backends", restart_s, "s")
    result.figures[mode] = {
        "load": load.__dict__ | {"failed": load.failed, "rate": load.rate},
        "reloads": reloads,
        "timings_ms": {k: [round(v * 1000, 1) for v in vs] for k, vs in timings.items()},
        "restart_s": restart_s,
    }


def run(opts: Options) -> Result:
    backends_n = opts.size(4, 2)
    result = Result(
        NAME,
        params={
            "backends": backends_n,
            "wrk_connections": CONNECTIONS,
            "wrk_delay_ms": DELAY_MS,
            "check_interval_s": CHECK_INTERVAL,
            "rise": RISE,
            "fall": FALL,
            "drain_s": DRAIN_S,
            "restart_interval_reload_mode_s": opts.restart_interval,
        },
    )
    for runtime in (True, False):
        with result.attempt(mode_name(runtime)):
            scenario(opts, runtime, backends_n, result)
    result.notes.append(
        "ZooKeeper registry; no HAProxy health checks (nerve is the judge); "
        "defaults: retries 3, option redispatch"
    )
    return result
