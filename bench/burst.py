"""Burst: 1,000 membership changes written at once -> HAProxy shows all of them.

50 services x 20 servers are loaded and served first. Then half the changes remove
existing servers and half add brand-new ones, spread over every service, all written at
once, as many nerves send them (bench.burst_writers): WRITERS sessions or connections,
each change its own request, all in flight at once (ZooKeeper: kazoo sessions; etcd:
gRPC clients). The clock runs from the first write until `show servers state` matches
the new membership exactly, and HAProxy's master counts the reloads meanwhile; synapse's
applies and the CPU time of the writers, the registry and synapse are counted beside it.
Run in synapse's runtime mode and, for comparison, with `do_socket: false` (a reload per
change, rate limited by `restart_interval`, the peers' way).
"""

from __future__ import annotations

import time

from bench import Options
from bench.burst_writers import WRITERS
from bench.haproxy import missing
from bench.prometheus_text import metric_sum
from bench.registry import Handle, load_fleet, open_registry, server
from bench.report import Result, Target
from bench.stack import DaemonError, Synapse, Workspace, cpu_seconds, mode_name
from smartstack.record import Registration

NAME = "burst"
TARGET_MS = Target("<=", 1000, "ms")
TARGET_RELOADS = Target("==", 0)
POLL_S = 0.005
SETTLE_S = 1.0  # after the burst is applied: a late reload would still be counted


def plan(
    fleet_handles: dict[str, list[Handle]],
    expected: dict[str, set[tuple[str, int]]],
    services: int,
    servers: int,
    changes: int,
):
    """(adds, removes, new expected): removals and brand-new servers, round robin over services."""
    after = {name: set(addresses) for name, addresses in expected.items()}
    removes: list[Handle] = []
    adds: list[tuple[str, Registration]] = []
    for k in range(changes // 2):
        i, j = k % services, k // services
        removes.append(fleet_handles[f"svc{i}"][j])
        gone = server(i, j)
        after[f"svc{i}"].discard((gone.host, gone.port))
    for k in range(changes - changes // 2):
        i, j = k % services, servers + k // services
        new = server(i, j)
        adds.append((f"svc{i}", new))
        after[f"svc{i}"].add((new.host, new.port))
    return adds, removes, after


def scenario(
    opts: Options,
    kind: str,
    runtime: bool,
    services: int,
    servers: int,
    changes: int,
    result: Result,
) -> None:
    with Workspace(opts.keep) as ws:
        reg = open_registry(ws, kind)
        fleet = load_fleet(reg, services, servers, prefix="/bench/burst")
        syn = Synapse(
            ws,
            fleet.synapse_services(),
            runtime=runtime,
            restart_interval=opts.restart_interval,
            log_level=opts.log_level,
        ).start()
        view = syn.haproxy
        syn.wait(
            lambda: missing(view, fleet.expected) == 0,
            120,
            f"HAProxy to serve the {fleet.size} loaded servers",
            interval=0.1,
        )
        adds, removes, after = plan(fleet.handles, fleet.expected, services, servers, changes)
        adds = [(fleet.path(name), r) for name, r in adds]
        writer = reg.burst_writer()  # connected before the clock
        time.sleep(SETTLE_S)  # let start-up reloads finish before counting
        reloads_before = view.procs().master_reloads

        applies_before = metric_sum(syn.metrics(), "synapse_applies_total") or 0.0
        pids = {"registry": reg.pids(), "synapse": [syn.pid]}
        cpu_before = {who: sum(map(cpu_seconds, p)) for who, p in pids.items()}
        started, writer_cpu = time.perf_counter(), time.process_time()
        writer.write(adds, removes)
        written, writer_cpu = time.perf_counter() - started, time.process_time() - writer_cpu
        deadline = started + 60
        while (left := missing(view, after)) != 0:
            if time.perf_counter() > deadline:
                raise DaemonError(
                    f"HAProxy still differs by {left} servers 60 s after the burst\n{syn.logs()}"
                )
            time.sleep(POLL_S)
        applied = time.perf_counter() - started
        cpu = {who: sum(map(cpu_seconds, p)) - cpu_before[who] for who, p in pids.items()}
        rounds = int((metric_sum(syn.metrics(), "synapse_applies_total") or 0.0) - applies_before)
        time.sleep(SETTLE_S)
        reloads = view.procs().master_reloads - reloads_before

    title = f"{kind}, {mode_name(runtime)}"
    section = result.section(title)
    section.add(
        "changes written at once",
        len(adds) + len(removes),
        note=f"{len(removes)} removed, {len(adds)} brand-new",
    )
    section.add("all writes acknowledged", written * 1000, "ms")
    section.add(
        "first write -> HAProxy shows all", applied * 1000, "ms", TARGET_MS if runtime else None
    )
    section.add("last write acknowledged -> HAProxy shows all", (applied - written) * 1000, "ms")
    section.add("HAProxy reloads", reloads, target=TARGET_RELOADS if runtime else None)
    section.add("synapse's applies, until HAProxy shows all", rounds)
    section.add("CPU of the writers, until all acknowledged", writer_cpu * 1000, "ms")
    section.add("CPU of the registry, until HAProxy shows all", cpu["registry"] * 1000, "ms")
    section.add("CPU of synapse, until HAProxy shows all", cpu["synapse"] * 1000, "ms")
    result.figures[title] = {
        "changes": len(adds) + len(removes),
        "written_ms": written * 1000,
        "applied_ms": applied * 1000,
        "reloads": reloads,
        "fleet_write_s": fleet.write_s,
        "writer_cpu_ms": writer_cpu * 1000,
        "registry_cpu_ms": cpu["registry"] * 1000,
        "synapse_cpu_ms": cpu["synapse"] * 1000,
        "applies": rounds,
    }


def run(opts: Options) -> Result:
    services, servers = opts.size(50, 5), opts.size(20, 4)
    changes = opts.size(1000, 10)
    result = Result(
        NAME,
        params={
            "loaded": f"{services}x{servers}",
            "changes": changes,
            "restart_interval_reload_mode_s": opts.restart_interval,
        },
    )
    for kind in opts.registries:
        for runtime in (True, False):
            if not opts.wants(f"{kind}, {mode_name(runtime)}"):
                continue
            with result.attempt(f"{kind}, {mode_name(runtime)}"):
                scenario(opts, kind, runtime, services, servers, changes, result)
    result.notes.append(
        f"Written by {WRITERS} writers at once, every change its own request (ZooKeeper: "
        f"pipelined on each session; etcd: all in flight on each gRPC client). "
        f"HAProxy polled every {POLL_S * 1000:.0f} ms."
    )
    return result
