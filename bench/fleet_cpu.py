"""`python -m bench.fleet_cpu`: synapse CPU per registry write, on a few hosts of the fleet.

The fleet benchmark (`python -m bench fleet`: 50 synapses, ~12 min) is CPU bound on this
machine, and its figure that matters is each synapse's CPU per write. This measures that
figure alone, small enough to repeat for an A/B or under a profiler: 1-5 real synapses
(managed HAProxy each) watch the same S services of R records on a real registry (one
member by default), idle for a while (their idle CPU), then a rolling deploy replaces
`--changes` instances `--parallel` at a time, each batch followed until every HAProxy serves
the new set, exactly as the fleet benchmark does. Printed per synapse (and as JSON with
`--json`): CPU ms per write above its idle rate, its HAProxy's too.

    python -m bench.fleet_cpu --registry etcd --synapses 2 --changes 200
    python -m bench.fleet_cpu --registry zookeeper --profile /tmp/prof   # py-spy raw files
    python -m bench.fleet_cpu --synapse-path /tmp/base                   # synapse of another tree

`--synapse-path DIR` puts DIR first on the synapses' PYTHONPATH (the harness itself stays
this tree's): an A/B of two trees under the same harness.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import Options
from bench.fleet import PREFIX, follow, haproxy_pids, lagging, reg, start_synapses
from bench.fleet_registry import FleetRegistry, open_fleet_registry
from bench.haproxy import Address
from bench.prometheus_text import metric_sum
from bench.stack import BIN, Synapse, Workspace, cpu_seconds

BATCH_TIMEOUT_S = 60.0


def per_host_cpu(synapses: list[Synapse]) -> list[dict[str, float]]:
    return [
        {"synapse": cpu_seconds(s.pid), "haproxy": sum(cpu_seconds(p) for p in haproxy_pids(s))}
        for s in synapses
    ]


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds per thread of a process, keyed by "tid name" (gRPC's C threads, kazoo's
    thread and the event loop show apart)."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            out[f"{task.name} {name}"] = _task_cpu(task)
        except (OSError, ValueError):
            continue
    return out


def _task_cpu(task: Path) -> float:
    fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


COUNTED = (
    "synapse_applies_total",
    "synapse_watch_events_total",
    "synapse_registry_reads_total",
    "synapse_haproxy_plan_operations_total",  # runtime commands sent
)


def counts(syn: Synapse) -> dict[str, float]:
    """synapse's own counters: rounds handed to HAProxy, watch events, registry reads."""
    metrics = syn.metrics()
    return {name: metric_sum(metrics, name) or 0.0 for name in COUNTED}


def per_write_ms(
    before: list[dict[str, float]],
    after: list[dict[str, float]],
    idle_rate: list[dict[str, float]],
    seconds: float,
    writes: int,
) -> list[dict[str, float]]:
    """CPU ms per write per host above each host's own idle rate (CPU-s per s)."""
    out = []
    for b, a, idle in zip(before, after, idle_rate, strict=True):
        out.append(
            {
                who: 1000 * max(0.0, a[who] - b[who] - idle[who] * seconds) / max(1, writes)
                for who in b
            }
        )
    return out


def start_profilers(synapses: list[Synapse], out_dir: Path, rate: int) -> list[subprocess.Popen]:
    """py-spy on each synapse (raw folded stacks): --nonblocking, so the process is not
    paused for each sample (its CPU figure stays close to an unprofiled run)."""
    spy = shutil.which("py-spy", path=str(BIN)) or shutil.which("py-spy")
    if spy is None:
        raise SystemExit("--profile needs py-spy (make install puts it in .venv)")
    out_dir.mkdir(parents=True, exist_ok=True)
    procs = []
    for syn in synapses:
        out = out_dir / f"{syn.name}.raw.txt"
        args = [spy, "record", "--pid", str(syn.pid), "--rate", str(rate), "--nonblocking", "--gil",
                "--format", "raw", "--output", str(out)]  # fmt: skip
        procs.append(subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
    time.sleep(1.0)  # py-spy attaches
    return procs


def stop_profilers(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        proc.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
    for proc in procs:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def deploy(
    registry: FleetRegistry,
    synapses: list[Synapse],
    handles: dict[tuple[int, int], str],
    expected: dict[str, set[Address]],
    order: list[tuple[int, int]],
    args: argparse.Namespace,
) -> int:
    """Replace the instances in `order`, `parallel` at a time: the writes made.

    The fleet's writers send a batch's writes at once (ZooKeeper pipelined, etcd from 10
    threads). `--one-by-one` writes one after the other (what the fleet's etcd writer did
    before a0c5ded): how spread-out writes change a synapse's rounds and CPU per write."""
    writes, parallel = 0, args.parallel
    one_by_one = args.one_by_one
    for start in range(0, len(order), parallel):
        batch = order[start : start + parallel]
        t0 = time.monotonic()
        new = [(f"{PREFIX}/svc{i}", reg(i, j, 1)) for i, j in batch]
        if one_by_one:
            for k in batch:
                registry.remove_many([handles[k]])
            created = [registry.add_many([item])[0] for item in new]
        else:
            registry.remove_many([handles[k] for k in batch])
            created = registry.add_many(new)
        for (i, j), handle in zip(batch, created, strict=True):
            handles[(i, j)] = handle
            old, fresh = reg(i, j, 0), reg(i, j, 1)
            expected[f"svc{i}"] ^= {(old.host, old.port), (fresh.host, fresh.port)}
        writes += 2 * len(batch)
        follow(synapses, {f"svc{i}": expected[f"svc{i}"] for i, _ in batch}, t0, BATCH_TIMEOUT_S)
        time.sleep(max(0.0, t0 + args.gap_s - time.monotonic()))  # (the fleet's rhythm)
    return writes


def measure(args: argparse.Namespace) -> dict[str, Any]:
    if args.synapse_path:  # the synapses import the other tree; this harness stays ours
        os.environ["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(Path(args.synapse_path).resolve()), os.environ.get("PYTHONPATH"))
            if p
        )  # fmt: skip
    with Workspace(keep=args.keep) as ws:
        registry = open_fleet_registry(ws, args.registry, args.members)
        names = [f"svc{i}" for i in range(args.services)]
        items = [((i, j), f"{PREFIX}/svc{i}", reg(i, j, 0))
                 for i in range(args.services) for j in range(args.per_service)]  # fmt: skip
        created = registry.add_many([(p, r) for _, p, r in items])
        handles = {k: h for (k, _, _), h in zip(items, created, strict=True)}
        expected: dict[str, set[Address]] = {svc: set() for svc in names}
        for (i, _), _, r in items:
            expected[f"svc{i}"].add((r.host, r.port))
        opts = Options(log_level="warning")
        extra = {"haproxy": {"coalesce_ms": args.coalesce_ms}} if args.coalesce_ms else None
        synapses = start_synapses(ws, registry, args.synapses, names, opts, extra)
        for syn in synapses:
            syn.wait(lambda s=syn: not lagging(s, expected), 120, "the first full sync")
        time.sleep(args.settle_s)  # the after-start sweep and first state dumps
        c0, t0 = per_host_cpu(synapses), time.monotonic()
        time.sleep(args.idle_s)
        idle_s = time.monotonic() - t0
        c1 = per_host_cpu(synapses)
        idle = [{k: (b[k] - a[k]) / idle_s for k in a} for a, b in zip(c0, c1, strict=True)]
        order = [(i, j) for j in range(args.per_service) for i in range(args.services)]
        order = order[: args.changes]
        profilers = start_profilers(synapses, args.profile, args.rate) if args.profile else []
        load = os.getloadavg()[0]
        threads0 = [thread_cpu(s.pid) for s in synapses]
        counts0 = [counts(s) for s in synapses]
        try:  # (py-spy outlives a failed deploy otherwise)
            c2, t2 = per_host_cpu(synapses), time.monotonic()
            writes = deploy(registry, synapses, handles, expected, order, args)
            seconds = time.monotonic() - t2
            c3 = per_host_cpu(synapses)
            threads = [
                {t: round(1000 * (v - before.get(t, 0.0)) / max(1, writes), 3)
                 for t, v in thread_cpu(s.pid).items() if v - before.get(t, 0.0) > 0}
                for s, before in zip(synapses, threads0, strict=True)
            ]  # fmt: skip
        finally:
            stop_profilers(profilers)
        per_write_counts = [
            {k: round((v - c.get(k, 0.0)) / max(1, writes), 3) for k, v in counts(s).items()}
            for s, c in zip(synapses, counts0, strict=True)
        ]
        per_write = per_write_ms(c2, c3, idle, seconds, writes)
        return {
            "registry": args.registry,
            "synapse_path": args.synapse_path or "this tree",
            "synapses": args.synapses,
            "services": args.services,
            "per_service": args.per_service,
            "gap_s": args.gap_s,
            "writes": writes,
            "deploy_s": seconds,
            "load_1min_at_deploy": load,
            "idle_cpu_pct": [{k: 100 * v for k, v in d.items()} for d in idle],
            "ms_per_write": per_write,
            "thread_ms_per_write": threads,
            "counts_per_write": per_write_counts,
            "synapse_ms_per_write_mean": sum(p["synapse"] for p in per_write) / len(per_write),
            "haproxy_ms_per_write_mean": sum(p["haproxy"] for p in per_write) / len(per_write),
        }


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.fleet_cpu", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--registry", choices=["zookeeper", "etcd"], default="zookeeper")
    p.add_argument("--members", type=int, default=1, help="registry members (default 1)")
    p.add_argument("--synapses", type=int, default=2)
    p.add_argument("--services", type=int, default=200)
    p.add_argument("--per-service", type=int, default=5)
    p.add_argument("--changes", type=int, default=200, help="instances replaced (2 writes each)")
    p.add_argument("--parallel", type=int, default=10)
    p.add_argument("--one-by-one", action="store_true", help="writes one after the other")
    p.add_argument(
        "--gap-s", type=float, default=0.0,
        help="a batch starts at least this long after the previous one (the 50-synapse "
        "fleet's rhythm is ~1.2 s: each batch then pays its own background work)",
    )  # fmt: skip
    p.add_argument("--idle-s", type=float, default=10.0)
    p.add_argument("--settle-s", type=float, default=5.0, help="after the first full sync")
    p.add_argument("--coalesce-ms", type=float, default=0.0, help="synapse's haproxy.coalesce_ms")
    p.add_argument("--profile", type=Path, help="py-spy raw profile per synapse into DIR")
    p.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    p.add_argument("--synapse-path", help="a tree whose synapse the synapses run")
    p.add_argument("--keep", action="store_true")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if not 1 <= args.synapses <= 10 or args.changes > args.services * args.per_service:
        p.error("--synapses 1..10; --changes at most services x per-service")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    out = measure(args)
    if args.json:
        print(json.dumps(out))
    else:
        print(f"{out['registry']}, {out['synapse_path']}: {out['synapses']} synapses x "
              f"{out['services']} services, {out['writes']} writes in {out['deploy_s']:.1f} s, "
              f"load {out['load_1min_at_deploy']:.1f}")  # fmt: skip
        rows = zip(out["ms_per_write"], out["idle_cpu_pct"], strict=True)
        for k, (p, idle) in enumerate(rows):
            syn, hap, idle_pct = p["synapse"], p["haproxy"], idle["synapse"]
            print(f"  synapse-{k}: {syn:.3f} ms/write above idle ({idle_pct:.2f} % idle); "
                  f"HAProxy {hap:.3f} ms/write")  # fmt: skip
        for k, threads in enumerate(out["thread_ms_per_write"]):
            print(f"  synapse-{k} threads (ms/write, idle included): {threads}")
        print(f"  per write, synapse-0's own counters: {out['counts_per_write'][0]}")
        print(f"  mean synapse {out['synapse_ms_per_write_mean']:.3f} ms/write, "
              f"HAProxy {out['haproxy_ms_per_write_mean']:.3f} ms/write")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
