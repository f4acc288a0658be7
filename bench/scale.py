"""Scale: synapse cold start against 1,000 services x 20 servers.

The records are in the registry before synapse starts. From the moment the synapse
process is spawned: when its config file names every server ("complete config"), and
when HAProxy's runtime state serves all of them. Then synapse's RSS (VmRSS, and VmHWM
for the peak), render and validation times (synapse's /metrics when it exposes them;
`haproxy -c` on the final file is timed here either way), and registry reads per
membership change: single changes are written one by one into distinct services and
synapse's `synapse_registry_reads_total` (and, for etcd, the server's own count of Range
calls) is compared before and after.
"""

from __future__ import annotations

import re
import statistics
import subprocess
import time

from bench import Options
from bench.haproxy import count_serving, missing
from bench.prometheus_text import metric_sum
from bench.registry import EtcdRegistry, Fleet, load_fleet, open_registry, server
from bench.report import Result, Target
from bench.stack import Synapse, Workspace, cpu_seconds, rss_kib, service_block

NAME = "scale"
TARGET_START_S = Target("<=", 3, "s")
TARGET_RSS_MB = Target("<=", 150, "MB")
POLL_S = 0.1
LOGGED_EVENT = re.compile(
    r"event=(haproxy_started|haproxy_reloaded|haproxy_applied)\b.* ms=([\d.]+)"
)
SERVER_LINE = re.compile(rb"^\s*server\s", re.MULTILINE)


def _config_servers(syn: Synapse) -> int:
    try:
        return len(SERVER_LINE.findall(syn.haproxy_cfg.read_bytes()))
    except FileNotFoundError:
        return 0


def cold_start(syn: Synapse, fleet: Fleet, timeout: float) -> dict[str, float]:
    """Seconds from spawning synapse to: HAProxy answering, complete config, all serving."""
    syn.start(timeout=timeout)
    assert syn.started_at is not None
    out = {"haproxy_up_s": time.monotonic() - syn.started_at}
    while "all_serving_s" not in out:
        now = time.monotonic() - syn.started_at
        if "config_complete_s" not in out and _config_servers(syn) >= fleet.size:
            out["config_complete_s"] = now
        if count_serving(syn.haproxy) >= fleet.size:
            out["all_serving_s"] = time.monotonic() - syn.started_at
            out.setdefault("config_complete_s", out["all_serving_s"])
        elif now > timeout:
            raise TimeoutError(
                f"HAProxy serves {count_serving(syn.haproxy)} of {fleet.size} "
                f"servers {timeout:.0f} s after synapse started\n{syn.logs()}"
            )
        syn.check_alive()
        time.sleep(POLL_S)
    return out


def _histogram_means(metrics: dict, words: tuple[str, ...]) -> dict[str, float]:
    """Mean seconds of every `*_seconds` histogram whose name has one of `words`."""
    out = {}
    for name in metrics:
        if name.endswith("_seconds_sum") and any(w in name for w in words):
            base = name[: -len("_sum")]
            count = metric_sum(metrics, f"{base}_count") or 0
            if count:
                out[base] = (metric_sum(metrics, name) or 0) / count
    return out


def _logged_ms(syn: Synapse) -> dict[str, list[float]]:
    """`ms=` of synapse's haproxy_started / haproxy_reloaded / haproxy_applied log events."""
    out: dict[str, list[float]] = {}
    assert syn.proc is not None
    for line in syn.proc.log_path.read_text(errors="replace").splitlines():
        match = LOGGED_EVENT.search(line)
        if match:
            out.setdefault(match.group(1), []).append(float(match.group(2)))
    return out


def validate_seconds(syn: Synapse, runs: int = 3) -> float:
    """Median wall time of `haproxy -c -q -f` on synapse's final config."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(
            ["haproxy", "-c", "-q", "-f", str(syn.haproxy_cfg)], check=True, capture_output=True
        )
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def reads_per_change(syn: Synapse, fleet: Fleet, changes: int) -> dict[str, float | None]:
    """Registry reads synapse makes per single membership change (adds and removals)."""
    reg = fleet.registry
    services = len(fleet.expected)
    before = metric_sum(syn.metrics(), "synapse_registry_reads_total")
    ranges_before = reg.range_reads() if isinstance(reg, EtcdRegistry) else None
    expected = {k: set(v) for k, v in fleet.expected.items()}
    for k in range(changes // 2):
        i = k % services
        name = f"svc{i}"
        gone, new = server(i, k // services), server(i, 1000 + k // services)
        reg.remove(fleet.handles[name][k // services])
        reg.add(fleet.path(name), new)
        expected[name] ^= {(gone.host, gone.port), (new.host, new.port)}
    syn.wait(
        lambda: missing(syn.haproxy, expected) == 0,
        60,
        "the single changes to apply",
        interval=0.05,
    )
    time.sleep(0.5)  # reads that trail the change (data watches) are counted too
    after = metric_sum(syn.metrics(), "synapse_registry_reads_total")
    out: dict[str, float | None] = {"changes": float(changes // 2 * 2)}
    out["synapse_metric"] = (
        (after - before) / out["changes"] if None not in (before, after) else None
    )
    if ranges_before is not None:
        out["etcd_range_calls"] = (reg.range_reads() - ranges_before) / out["changes"]
    return out


def baseline_rss_mb(ws: Workspace, fleet: Fleet) -> float:
    """RSS of a synapse with one service of one server: the cost of the process itself."""
    name = next(iter(fleet.expected))
    services = {name: service_block(fleet.registry.discovery(fleet.path(name)))}
    syn = Synapse(ws, services, log_level="warning", name="synapse-baseline").start()
    syn.wait(lambda: count_serving(syn.haproxy) > 0, 60, "the baseline synapse to serve")
    rss = rss_kib(syn.pid)["VmRSS"] / 1024
    syn.stop()
    return rss


def scenario(opts: Options, kind: str, services: int, servers: int, result: Result) -> None:
    timeout = 60 + services * 0.3
    title = f"{kind}, {services} services x {servers} servers"
    with Workspace(opts.keep) as ws:
        reg = open_registry(ws, kind)
        fleet = load_fleet(reg, services, servers, prefix="/bench/scale")
        syn = Synapse(ws, fleet.synapse_services(), log_level="info")
        start = cold_start(syn, fleet, timeout)
        rss_done, cpu_s = rss_kib(syn.pid), cpu_seconds(syn.pid)
        time.sleep(2.0)
        rss = rss_kib(syn.pid)
        reloads = syn.haproxy.procs().master_reloads
        reported = _histogram_means(syn.metrics(), ("render", "validat", "apply", "reload"))
        logged = _logged_ms(syn)
        validate_s = validate_seconds(syn)
        config_bytes = syn.haproxy_cfg.stat().st_size
        figures = {"start": start, "rss_kib_complete": rss_done, "rss_kib": rss, "cpu_s": cpu_s,
                   "reloads": reloads, "synapse_histograms_s": reported,
                   "synapse_logged_ms": logged, "validate_s": validate_s,
                   "config_bytes": config_bytes, "fleet_write_s": fleet.write_s}  # fmt: skip
        result.figures[title] = figures

        section = result.section(title)
        section.add("records written before start", fleet.size, note=f"in {fleet.write_s:.1f} s")
        section.add("spawn -> HAProxy answering", start["haproxy_up_s"], "s")
        section.add("spawn -> complete config file", start["config_complete_s"], "s")
        section.add("spawn -> HAProxy serves every server", start["all_serving_s"], "s",
                    TARGET_START_S)  # fmt: skip
        section.add("synapse CPU time until complete", cpu_s, "s")
        section.add("synapse RSS when complete", rss_done["VmRSS"] / 1024, "MB")
        section.add("synapse RSS 2 s later", rss["VmRSS"] / 1024, "MB", TARGET_RSS_MB)
        section.add("synapse peak RSS (VmHWM)", rss["VmHWM"] / 1024, "MB")
        section.add("HAProxy reloads during start", reloads)
        section.add("config file size", config_bytes / 1e6, "MB")
        section.add("haproxy -c on the final config", validate_s * 1000, "ms")
        for name, values in sorted(logged.items()):
            section.add(f"synapse {name} (log, max)", max(values), "ms", note=f"n={len(values)}")
        for name, mean in sorted(reported.items()):
            section.add(f"{name} (mean)", mean * 1000, "ms")

        with result.attempt(f"{title}: reads per change"):
            reads = reads_per_change(syn, fleet, opts.size(100, 4))
            figures["reads_per_change"] = reads
            per_change = reads["synapse_metric"]
            section.add("registry reads per change (synapse metric)",
                        per_change if per_change is not None else "not exposed",
                        note=f"{reads['changes']:.0f} single changes")  # fmt: skip
            if "etcd_range_calls" in reads:
                section.add("etcd range reads per change (server side)", reads["etcd_range_calls"])
        syn.stop()
        with result.attempt(f"{title}: baseline RSS"):
            base = baseline_rss_mb(ws, fleet)
            figures["baseline_rss_mb"] = base
            section.add("synapse RSS with 1 service (baseline)", base, "MB")
            per_server = (rss["VmRSS"] / 1024 - base) * 1024 / fleet.size
            section.add("RSS per server above baseline", per_server, "KB")


def run(opts: Options) -> Result:
    services, servers = opts.size(1000, 20), opts.size(20, 5)
    result = Result(NAME, params={"services": services, "servers": servers})
    kinds = list(opts.registries)
    if "zookeeper" in kinds:  # what nerve's use_path_encoding saves: no read per child
        kinds.insert(kinds.index("zookeeper") + 1, "zookeeper+path_encoding")
    for kind in kinds:
        if opts.wants(title := f"{kind}, {services} services x {servers} servers"):
            with result.attempt(title):
                scenario(opts, kind, services, servers, result)
    result.notes.append(
        f"HAProxy's state is polled every {POLL_S * 1000:.0f} ms (resolution); "
        "each service has its own frontend port"
    )
    return result
