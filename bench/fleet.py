"""Fleet: many synapses watching the same services through a 3-member registry.

Per registry (a 3-node ZooKeeper ensemble, a 3-member etcd cluster): N real synapse
processes (managed mode: each with its own HAProxy, as on every host of a fleet), each
watching the same S services of R records. Then a rolling deploy replaces every instance
(its record removed, a new one on a new port written, the way nerve does it), `parallel`
instances at a time; each batch is followed until every synapse's HAProxy serves exactly
the new set. Figures: change -> every HAProxy updated (p50/p99 over the instances), the
registry's own request counters per write per watcher (ZooKeeper `mntr`, etcd /metrics),
its CPU time, and each synapse's and HAProxy's memory. Finally the whole registry is
stopped for a few seconds and started again: how the synapses' reconnects and re-reads
spread over time (server-side counters sampled every 100 ms) and how many requests they
made in total.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench import Options
from bench.fleet_registry import (
    FleetRegistry,
    burst,
    delta,
    open_fleet_registry,
    sample_until,
)
from bench.haproxy import Address, serves
from bench.prometheus_text import metric_sum
from bench.report import Result, Target, summary_ms
from bench.stack import (
    DaemonError,
    Synapse,
    Workspace,
    cpu_seconds,
    rss_kib,
    service_block,
    wait_for,
)
from smartstack.record import Registration
from testbed.haproxy import parse_servers_state, parse_show_proc

NAME = "fleet"
TARGET_P99_MS = Target("<=", 1000, "ms")
DEPLOY_CAP_S = 600.0  # the whole rolling deploy stops here, measured or not
BATCH_TIMEOUT_S = 60.0
OUTAGE_S = 5.0  # (--quick: QUICK_OUTAGE_S)
QUICK_OUTAGE_S = 2.0  # the path is the same; the smoke test in tests/system waits less
PREFIX = "/fleet"
START_AT_ONCE = 4
IDLE_S = 10.0
# The registry's requests from its own counters: ZooKeeper's packets received; etcd's range
# reads (batched listings and consistency checks go as ranges inside one Txn: a count of
# Range calls alone misses them).
REQUESTS = {"zookeeper": "zk_packets_received", "etcd": "etcd_debugging_mvcc_range_total"}


def sizes(opts: Options) -> dict[str, int]:
    env = os.environ.get("BENCH_FLEET_SYNAPSES")  # fewer when the machine is busy
    return {
        "synapses": int(env) if env else opts.size(50, 5),
        "services": opts.size(200, 20),
        "per_service": 5 if not opts.quick else 2,
        "parallel": opts.size(10, 5),
        "sample_after_outage_s": opts.size(20, 4),  # quick: keeps the system-tier smoke short
    }


def reg(service: int, slot: int, generation: int) -> Registration:
    """Instance `slot` of service i in deploy generation g: a distinct fake 127.0.0.1 port."""
    return Registration(
        host="127.0.0.1",
        port=20000 + generation * 1000 + slot,
        name=f"svc{service}-{slot}-g{generation}",
    )


def lagging(syn: Synapse, expected: dict[str, set[Address]]) -> set[str]:
    """The services whose backend in this synapse's HAProxy does not serve exactly `expected`."""
    if len(expected) > 20:
        command = "show servers state"
    else:  # one connection, one command per backend
        command = ";".join(f"show servers state {svc}" for svc in expected)
    serving: dict[str, set[Address]] = {}
    for row in parse_servers_state(syn.haproxy.runtime(command)):
        if serves(row):
            serving.setdefault(str(row["be_name"]), set()).add(
                (str(row["srv_addr"]), int(row["srv_port"]))
            )
    return {svc for svc, want in expected.items() if serving.get(svc, set()) != want}


def follow(
    synapses: list[Synapse], expected: dict[str, set[Address]], started: float, timeout: float
) -> tuple[dict[str, list[float]], list[float]]:
    """Poll every synapse until each serves `expected`: {service: [seconds per synapse]}.

    Also returns the duration of each sweep over all synapses (the time resolution).
    """
    pending = {i: set(expected) for i in range(len(synapses))}
    done: dict[str, list[float]] = {svc: [] for svc in expected}
    sweeps: list[float] = []
    deadline = started + timeout
    while pending:
        sweep_start = time.monotonic()
        for i in list(pending):
            late = lagging(synapses[i], {svc: expected[svc] for svc in pending[i]})
            now = time.monotonic()
            for svc in pending[i] - late:
                done[svc].append(now - started)
            pending[i] = late
            if not late:
                del pending[i]
        sweeps.append(time.monotonic() - sweep_start)
        if pending and time.monotonic() > deadline:
            lag = sum(len(v) for v in pending.values())
            raise TimeoutError(
                f"{len(pending)} synapses still lag on {lag} services {timeout:.0f} s after "
                f"the writes\n{synapses[next(iter(pending))].logs()}"
            )
    return done, sweeps


def start_synapses(
    ws: Workspace,
    registry: FleetRegistry,
    n: int,
    services: list[str],
    opts: Options,
    extra: dict[str, Any] | None = None,
) -> list[Synapse]:
    """N synapses one after the other (each waits for its HAProxy), same services each;
    `extra`: more of synapse's config (e.g. {"haproxy": {"coalesce_ms": 5}})."""
    out = []
    for k in range(n):
        config = {
            svc: service_block(registry.discovery(f"{PREFIX}/{svc}"), None) for svc in services
        }
        out.append(Synapse(ws, config, log_level="warning", name=f"synapse-{k}", extra=extra))
    # A few at a time: one by one leaves the second core idle, all at once starves them.
    with ThreadPoolExecutor(START_AT_ONCE) as pool:
        list(pool.map(lambda syn: syn.start(timeout=300), out))
    return out


def haproxy_pids(syn: Synapse) -> list[int]:
    pids = parse_show_proc(syn.haproxy.master("show proc"))
    return pids["master"] + pids["workers"]


def fleet_cpu(synapses: list[Synapse]) -> dict[str, float]:
    """CPU seconds used so far by the synapses, their HAProxies and the whole machine: on 2
    shared cores the wall figures of 50 hosts are their CPU cost, which this turns back
    into a per-host cost."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    busy_ticks = sum(int(v) for v in fields) - int(fields[3]) - int(fields[4])  # - idle, iowait
    return {
        "synapses": sum(cpu_seconds(s.pid) for s in synapses),
        "haproxies": sum(cpu_seconds(p) for s in synapses for p in haproxy_pids(s)),
        "machine": busy_ticks / os.sysconf("SC_CLK_TCK"),
    }


def memory(synapses: list[Synapse]) -> dict[str, Any]:
    syn_kib = [rss_kib(s.pid)["VmRSS"] for s in synapses]
    haproxy_kib = [sum(rss_kib(p)["VmRSS"] for p in haproxy_pids(s)) for s in synapses]
    return {
        "synapse_rss_mb": [k / 1024 for k in syn_kib],
        "haproxy_rss_mb": [k / 1024 for k in haproxy_kib],
    }


def rolling_deploy(
    registry: FleetRegistry,
    synapses: list[Synapse],
    handles: dict[tuple[int, int], str],
    expected: dict[str, set[Address]],
    size: dict[str, int],
) -> dict[str, Any]:
    """Replace every instance, `parallel` at a time; follow each batch to every HAProxy."""
    order = [(i, j) for j in range(size["per_service"]) for i in range(size["services"])]
    per_change: list[float] = []
    per_synapse: list[float] = []
    acks: list[float] = []
    sweeps: list[float] = []
    began = time.monotonic()
    for start in range(0, len(order), size["parallel"]):
        if time.monotonic() - began > DEPLOY_CAP_S:
            break
        batch = order[start : start + size["parallel"]]
        t0 = time.monotonic()
        registry.remove_many([handles[k] for k in batch])
        new = [(f"{PREFIX}/svc{i}", reg(i, j, 1)) for i, j in batch]
        for (i, j), handle in zip(batch, registry.add_many(new), strict=True):
            handles[(i, j)] = handle
            old, fresh = reg(i, j, 0), reg(i, j, 1)
            expected[f"svc{i}"] ^= {(old.host, old.port), (fresh.host, fresh.port)}
        acks.append(time.monotonic() - t0)
        touched = {f"svc{i}": expected[f"svc{i}"] for i, _ in batch}
        done, batch_sweeps = follow(synapses, touched, t0, BATCH_TIMEOUT_S)
        sweeps += batch_sweeps
        for times in done.values():
            per_change.append(max(times))
            per_synapse += times
    return {
        "instances_replaced": len(per_change),
        "instances_planned": len(order),
        "deploy_s": time.monotonic() - began,
        "writes": 2 * len(per_change),
        "change_to_all": summary_ms(per_change),
        "change_to_each": summary_ms(per_synapse),
        "batch_write_ack": summary_ms(acks),
        "sweep": summary_ms(sweeps),
    }


def client_reads(syn: Synapse) -> float:
    """synapse's own count of registry reads (lists and record reads), from its /metrics."""
    return metric_sum(syn.metrics(), "synapse_registry_reads_total") or 0.0


def outage(
    registry: FleetRegistry, synapses: list[Synapse], expected: dict, after_s: float, down_s: float
) -> dict[str, Any]:
    """Stop every registry member, wait `down_s`, start them, sample the server side."""
    reads_before = [client_reads(s) for s in synapses]
    registry.stop_all()
    time.sleep(down_s)
    restart = time.monotonic()
    registry.start_all()
    up_s = time.monotonic() - restart
    series = sample_until(registry.counters, after_s, 0.1)
    key = REQUESTS[registry.kind]
    conn_key = (
        "zk_num_alive_connections"
        if registry.kind == "zookeeper"
        else "etcd_debugging_mvcc_watch_stream_total"
    )
    requests = [(t + up_s, c.get(key, 0.0)) for t, c in series]
    conns = [(t + up_s, c.get(conn_key, 0.0)) for t, c in series]
    spread = burst(requests)
    final_conns = conns[-1][1] if conns else 0.0
    # Serving again: every synapse's HAProxy still in step (nothing was lost meanwhile).
    try:
        wait_for(
            lambda: all(not lagging(s, expected) for s in synapses),
            60,
            "every HAProxy in step after the outage",
        )
    except DaemonError as exc:
        raise DaemonError(f"{why_lagging(registry, synapses, expected)}\n{exc}") from exc
    reads = [client_reads(s) - r for s, r in zip(synapses, reads_before, strict=True)]
    return {
        "counter": key,
        "members_up_s": up_s,
        "synapse_reads": reads,
        "requests_total": requests[-1][1] if requests else 0.0,
        "burst": spread,
        "burst_per_synapse": (spread["excess"] or 0.0) / len(synapses),
        "connections_final": final_conns,
        "t_all_connected_s": next((t for t, v in conns if v >= final_conns), None),
        "series_requests": requests,
        "series_connections": conns,
    }


def why_lagging(
    registry: FleetRegistry, synapses: list[Synapse], expected: dict[str, set[Address]]
) -> str:
    """Whose fault a lag is: the registry's records (the writer's session lost them, as
    nerve's would be lost if it came back too late) or the synapses' view of them."""
    try:  # (never instead of the error it explains: a dead HAProxy, a registry down)
        late = {i: lagging(s, expected) for i, s in enumerate(synapses)}
        late = {i: services for i, services in late.items() if services}
        services = sorted({svc for lag in late.values() for svc in lag})[:5]
        held = {s: f"{registry.held(f'{PREFIX}/{s}')} of {len(expected[s])}" for s in services}
    except Exception as exc:
        return f"(why_lagging failed: {exc!r}); writer sessions lost: {registry.sessions_lost}"
    return (
        f"{len(late)} of {len(synapses)} synapses lag on {sum(map(len, late.values()))} "
        f"services; the writer's sessions lost: {registry.sessions_lost}; records the "
        f"registry holds for the first lagging services: {held}"
    )


def scenario(kind: str, opts: Options, result: Result) -> None:
    size = sizes(opts)
    with Workspace(keep=opts.keep) as ws:
        registry = open_fleet_registry(ws, kind)
        names = [f"svc{i}" for i in range(size["services"])]
        items = [
            ((i, j), f"{PREFIX}/svc{i}", reg(i, j, 0))
            for i in range(size["services"])
            for j in range(size["per_service"])
        ]
        created = registry.add_many([(p, r) for _, p, r in items])
        handles = {k: h for (k, _, _), h in zip(items, created, strict=True)}
        expected: dict[str, set[Address]] = {svc: set() for svc in names}
        for (i, _), _, r in items:
            expected[f"svc{i}"].add((r.host, r.port))
        cpu0, t0 = registry.cpu_seconds(), time.monotonic()
        synapses = start_synapses(ws, registry, size["synapses"], names, opts)
        for syn in synapses:
            syn.wait(lambda s=syn: not lagging(s, expected), 120, "the first full sync")
        start_cpu = registry.cpu_seconds() - cpu0
        start_wall = time.monotonic() - t0
        time.sleep(1.0)  # let trailing reads settle before the counters are read
        idle_cpu, idle_s = fleet_cpu(synapses), IDLE_S if not opts.quick else 2.0
        time.sleep(idle_s)  # what the fleet costs with no change at all
        idle_cpu = {k: v / idle_s for k, v in delta(fleet_cpu(synapses), idle_cpu).items()}
        mem = memory(synapses)
        idle = registry.counters()
        load_deploy = os.getloadavg()[0]
        cpu1, fleet1 = registry.cpu_seconds(), fleet_cpu(synapses)
        deploy = rolling_deploy(registry, synapses, handles, expected, size)
        deploy_cpu = registry.cpu_seconds() - cpu1
        # (a HAProxy worker replaced meanwhile takes its CPU along: never below zero)
        fleet_used = {k: max(0.0, v) for k, v in delta(fleet_cpu(synapses), fleet1).items()}
        time.sleep(1.0)
        grown = delta(registry.counters(), idle)
        watchers = size["synapses"]
        per = grown.get(REQUESTS[kind], 0)
        per_write_watcher = (per / (deploy["writes"] * watchers)) if deploy["writes"] else None
        load_outage = os.getloadavg()[0]
        down_s = QUICK_OUTAGE_S if opts.quick else OUTAGE_S
        down = outage(registry, synapses, expected, size["sample_after_outage_s"], down_s)
        rss, hap = mem["synapse_rss_mb"], mem["haproxy_rss_mb"]
        title = f"{kind}: {watchers} synapses x {size['services']} services"
        section = result.section(title)
        section.add("start of all synapses -> all in step", start_wall, "s")
        section.add("registry CPU during that start", start_cpu, "s")
        section.add(
            "instances replaced (rolling deploy)",
            f"{deploy['instances_replaced']} of {deploy['instances_planned']}",
            note=f"{size['parallel']} at a time, {deploy['deploy_s']:.0f} s",
        )
        c = deploy["change_to_all"]
        section.add("change -> every HAProxy p50", c["p50_ms"], "ms")
        section.add("change -> every HAProxy p99", c["p99_ms"], "ms", TARGET_P99_MS)
        section.add("change -> each HAProxy p50 / p99",
                    f"{deploy['change_to_each']['p50_ms']:.0f} / "
                    f"{deploy['change_to_each']['p99_ms']:.0f} ms")  # fmt: skip
        section.add("poll sweep over all HAProxies (resolution) p50",
                    deploy["sweep"]["p50_ms"], "ms")  # fmt: skip
        if kind == "zookeeper":
            section.add("requests received per write per watcher (mntr)", per_write_watcher)
            sent = grown.get("zk_packets_sent", 0) / max(1, deploy["writes"] * watchers)
            section.add("packets sent per write per watcher (mntr)", sent)
            section.add("watches (sum over members)", idle.get("zk_watch_count"))
            section.add("client connections (sum over members)",
                        idle.get("zk_num_alive_connections"))  # fmt: skip
        else:
            section.add("range reads per write per watcher (mvcc)", per_write_watcher)
            calls = grown.get("grpc_handled_Range", 0) + grown.get("grpc_handled_Txn", 0)
            section.add("gRPC calls that carried them (Range + Txn)", calls)
            section.add("watch events sent per write per watcher",
                        grown.get("etcd_debugging_mvcc_events_total", 0)
                        / max(1, deploy["writes"] * watchers))  # fmt: skip
            section.add(
                "watchers (sum over members)", idle.get("etcd_debugging_mvcc_watcher_total")
            )
            section.add("watch streams (sum over members)",
                        idle.get("etcd_debugging_mvcc_watch_stream_total"))  # fmt: skip
        per_host_write = max(1, deploy["writes"]) * watchers
        for who, label in (("synapses", "synapse"), ("haproxies", "its HAProxy")):
            idle_share = idle_cpu[who] * deploy["deploy_s"]
            section.add(f"{label}: CPU when idle, each", 100 * idle_cpu[who] / watchers,
                        "% of a core")  # fmt: skip
            with_idle = 1000 * fleet_used[who] / per_host_write
            section.add(f"{label}: CPU per write above idle, each",
                        1000 * (fleet_used[who] - idle_share) / per_host_write, "ms",
                        note=f"{with_idle:.2f} ms with idle")  # fmt: skip
        section.add("machine busy during the deploy",
                    100 * fleet_used["machine"] / (os.cpu_count() or 1)
                    / max(deploy["deploy_s"], 1e-9), "% of all cores")  # fmt: skip
        section.add("registry CPU during the deploy (3 members)",
                    100 * deploy_cpu / max(deploy["deploy_s"], 1e-9), "% of a core")  # fmt: skip
        section.add("synapse RSS mean / max",
                    f"{sum(rss) / len(rss):.0f} / {max(rss):.0f} MB")  # fmt: skip
        section.add("HAProxy RSS (master + worker) mean", sum(hap) / len(hap), "MB")
        section.add("outage: registry down, then members up after", f"{down_s:.0f} s + "
                    f"{down['members_up_s']:.1f} s")  # fmt: skip
        b = down["burst"]
        window = size["sample_after_outage_s"]
        section.add(f"outage end: requests in {window} s ({down['counter']})",
                    down["requests_total"])  # fmt: skip
        section.add("outage end: burst above the steady rate (re-lists, re-reads)",
                    b["excess"], note=f"{down['burst_per_synapse']:.0f} per synapse")  # fmt: skip
        section.add("outage end: highest rate over one sample step", b["peak_per_s"], "/s",
                    note=f"longest step {b['longest_step_s']:.1f} s")  # fmt: skip
        reads = down["synapse_reads"]
        section.add("outage end: reads by synapses' own count (total, max of one)",
                    f"{sum(reads):.0f}, {max(reads):.0f}")  # fmt: skip
        shares = [b[k] for k in ("t10_s", "t50_s", "t90_s")]
        section.add("outage end: 10% / 50% / 90% of the burst by",
                    " / ".join("-" if t is None else f"{t:.1f}" for t in shares),
                    "s after restart")  # fmt: skip
        section.add("outage end: all synapses connected again by",
                    down["t_all_connected_s"], "s after restart")  # fmt: skip
        section.add("1-min load average at deploy / at outage",
                    f"{load_deploy:.1f} / {load_outage:.1f}")  # fmt: skip
        result.figures[kind] = {
            "sizes": size,
            "start_wall_s": start_wall,
            "start_registry_cpu_s": start_cpu,
            "deploy": deploy,
            "deploy_registry_cpu_s": deploy_cpu,
            "deploy_fleet_cpu_s": fleet_used,
            "idle_fleet_cpu_per_s": idle_cpu,
            "counters_idle": idle,
            "counters_deploy_delta": grown,
            "memory": mem,
            "outage": down,
            "load_average": {"deploy": load_deploy, "outage": load_outage},
        }


def run(opts: Options) -> Result:
    size = sizes(opts)
    result = Result(NAME, params=dict(size))
    for kind in opts.registries:
        with result.attempt(kind):
            scenario(kind, opts, result)
    result.notes += [
        "a change = one instance replaced (its record deleted, the new one written); "
        "timed from the first write of its batch to the sweep that saw it in every HAProxy",
        "requests per write per watcher: the registry's own counters over the deploy, "
        "summed over the 3 members, divided by writes x synapses (includes the writer's "
        "own 1 request per write and the sessions' pings)",
        "outage counters are read from the restarted members, so they count everything "
        "since the restart: the synapses' reconnects, re-lists and re-reads",
    ]
    if opts.quick:
        result.notes.append("quick sizes: proves the script works, the figures mean little")
    return result
