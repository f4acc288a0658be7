"""Memory soak: does anything in synapse, nerve or HAProxy grow under hours of churn?

A whole stack on 127.0.0.1 (bench/soak_churn.py: ZooKeeper, etcd, synapse with managed
HAProxy watching four services, three nerves registering real backends with HTTP, exec and
TCP checks) runs for ``--minutes`` (120; ``--quick``: 1) under a bounded wrk load on three
frontends, while the churn repeats on fixed periods: checks failing and passing,
maintenance on and off, SIGHUPs with config changes, ZooKeeper and etcd restarted, an
HAProxy worker killed, a nerve stopped past its ZooKeeper session. Every sample period (60 s;
quick: 5 s) each daemon's VmRSS, threads, fds and CPU seconds are read from /proc, synapse's
and each nerve's /metrics series counted, and wrk's requests and failures since the last
sample added up (bench/soak_sample.py).

The first quarter of the run is warm-up (caches, the first reloads, the allocator's
arenas) and is left out; RSS growth is the least-squares slope over the rest (the measured
span) and over its last half. A daemon has settled when the last half grows ≤ 1 MB/h, and
its threads and fds must not rise (the median of the measured span's last half no higher
than its first half's). Opt-in (`python -m bench soak`, `make soak`): it takes two hours.
Half an hour is not enough: a nerve still grew 1.3-1.5 MB/h from 19 to 30 minutes, 0.5 MB/h
from 55 to 110 (BENCHMARKS.md, session 49).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from itertools import pairwise
from typing import Any

from bench import Options
from bench.report import Result, Section, Target
from bench.soak_churn import ETCD_HOSTS, FULL, HOSTS, KINDS, LOADED, QUICK, Churn, Stack, build
from bench.soak_sample import CONNECTIONS, DELAY_MS, Load, take
from bench.stack import Workspace

NAME = "soak"
MINUTES, QUICK_MINUTES = 120.0, 1.0
SAMPLE_S, QUICK_SAMPLE_S = 60, 5
WARMUP = 0.25  # the share of the run left out before growth is measured
AT_LEAST = 2  # samples in a window: a slope needs two
SETTLED_MB_PER_H = 1.0
LOOP_S = 0.2  # the loop's pace: churn and samples are due to within this
DAEMONS = {
    "synapse": "synapse",
    **{f"host{i}": f"nerve host{i}" for i in range(HOSTS)},
    "haproxy_master": "HAProxy master",
    "haproxy_worker": "HAProxy worker (the current one)",
}


# --------------------------------------------------------------------------- figures


def slope_per_hour(points: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, value) points, in value per hour; None for fewer
    than two points or all at one time."""
    if len(points) < 2:
        return None
    mean_t = sum(t for t, _ in points) / len(points)
    mean_v = sum(v for _, v in points) / len(points)
    spread = sum((t - mean_t) ** 2 for t, _ in points)
    if spread == 0:
        return None
    return sum((t - mean_t) * (v - mean_v) for t, v in points) / spread * 3600


def tail(samples: Sequence[dict], fraction: float) -> list[dict]:
    """The samples from ``fraction`` of their time span on (a quarter: after the warm-up;
    a half: the last half), and never fewer than the last AT_LEAST."""
    if not samples:
        return []
    first, last = samples[0]["t"], samples[-1]["t"]
    kept = [s for s in samples if s["t"] >= first + (last - first) * fraction]
    return kept if len(kept) >= AT_LEAST else list(samples[-AT_LEAST:])


def series_of(samples: Sequence[dict], daemon: str, key: str) -> list[tuple[float, float]]:
    """(t, value) of one daemon's figure, over the samples where it was read."""
    return [
        (s["t"], s["daemons"][daemon][key]) for s in samples if key in s["daemons"].get(daemon, {})
    ]


def rise(values: Sequence[float]) -> float | None:
    """How much the later half's median is above the earlier half's (values in time order):
    a count that comes and goes with the churn (fds) nets out, one that keeps rising not."""
    if len(values) < 2:
        return None
    half = len(values) // 2
    return statistics.median(values[-half:]) - statistics.median(values[:half])


def cpu_percent(samples: Sequence[dict], daemon: str) -> float | None:
    """CPU used over the samples' span, in % of one core. A new pid (HAProxy's worker after
    a reload, its master after a crash) started within the interval: all its CPU counts."""
    points = [
        (s["t"], s["daemons"][daemon]["pid"], s["daemons"][daemon]["cpu_s"])
        for s in samples
        if daemon in s["daemons"]
    ]
    if len(points) < 2 or points[-1][0] == points[0][0]:
        return None
    used = sum(c1 - c0 if p1 == p0 else c1 for (_, p0, c0), (_, p1, c1) in pairwise(points))
    return 100 * used / (points[-1][0] - points[0][0])


def _kib_to_mb(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    return [(t, v / 1024) for t, v in points]


def daemon_rows(section: Section, measured: Sequence[dict], daemon: str, quick: bool) -> None:
    """RSS, growth, threads, fds, series and CPU of one daemon over the measured span."""
    rss = _kib_to_mb(series_of(measured, daemon, "rss_kib"))
    if not rss:
        section.add("samples", 0, note="never read in the measured span")
        return
    half = _kib_to_mb(series_of(tail(measured, 0.5), daemon, "rss_kib"))
    settled = None if quick else Target("<=", SETTLED_MB_PER_H, "MB/h")
    flat = None if quick else Target("<=", 0)
    section.add("RSS after warm-up", rss[0][1], "MB", note=f"at {rss[0][0] / 60:.1f} min")
    section.add("RSS at the end", rss[-1][1], "MB", note=f"at {rss[-1][0] / 60:.1f} min")
    section.add("RSS growth, measured span", slope_per_hour(rss), "MB/h", note="least squares")
    section.add(
        "RSS growth, its last half",
        slope_per_hour(half),
        "MB/h",
        settled,
        note=f"{len(half)} samples from {half[0][0] / 60:.1f} min; settled: ≤ 1 MB/h",
    )
    for key in ("threads", "fds"):
        values = [v for _, v in series_of(measured, daemon, key)]
        section.add(
            f"{key}: rise (median, later half - earlier)",
            rise(values),
            target=flat,
            note=f"first -> last {values[0]} -> {values[-1]}, min {min(values)}, max {max(values)}",
        )
    counts = [v for _, v in series_of(measured, daemon, "series")]
    if counts:
        section.add(
            "metrics series: last - first",
            counts[-1] - counts[0],
            note=f"{counts[0]} -> {counts[-1]}, max {max(counts)} (churn adds and removes some)",
        )
    section.add("CPU over the measured span", cpu_percent(measured, daemon), "% of a core")


def totals_rows(
    section: Section, samples: Sequence[dict], counts: dict[str, int], errors: int
) -> None:
    """Churn events by kind, requests and failed requests over the whole run."""
    for kind, label in KINDS.items():
        section.add(label, counts.get(kind, 0))
    section.add("churn steps that failed", errors, note="their errors: figures.events")
    loads = [s["load"] for s in samples if s.get("load")]
    failed = sum(load["failed"] for load in loads)
    by_kind = {k: sum(load["errors"][k] for load in loads) for k in loads[0]["errors"]}
    section.add("client requests", sum(load["requests"] for load in loads))
    section.add(
        "client requests failed",
        failed,
        note=f"{', '.join(f'{k} {v}' for k, v in by_kind.items() if v) or 'none'}; each "
        "HAProxy worker killed resets the connections it holds (no target)",
    )


def report(result: Result, samples: Sequence[dict], churn: dict[str, Any], quick: bool) -> None:
    """The soak's sections: one per daemon, then the churn and the load."""
    measured = tail(samples, WARMUP)
    for daemon, title in DAEMONS.items():
        daemon_rows(result.section(title), measured, daemon, quick)
    totals_rows(result.section("churn and load"), samples, churn["counts"], churn["errors"])
    result.notes.append(
        f"measured span: {measured[0]['t'] / 60:.1f}-{measured[-1]['t'] / 60:.1f} min "
        f"({len(measured)} of {len(samples)} samples; the first quarter is warm-up)"
    )
    if quick:
        result.notes.append(
            "quick: a short run of fast churn proves the script works; growth over it means "
            "nothing, so no figure has a target"
        )


# --------------------------------------------------------------------------- the run


def soak(stack: Stack, churn: Churn, load: Load, samples: list[dict], sample_s: float) -> None:
    """Churn and sample until the run's end (``churn.began`` + its length); samples are
    appended as they are taken (a failed run still has those before its failure)."""
    end = churn.began + churn.length_s
    next_sample = churn.began + sample_s
    while (now := time.monotonic()) < end:
        churn.step(now)
        if now >= next_sample:
            samples.append(take(stack, churn.began, load.cut()))
            # a registry restart blocks the loop for seconds: no samples back to back
            next_sample = max(next_sample + sample_s, time.monotonic() + sample_s / 2)
        stack.check_alive()
        time.sleep(LOOP_S)
    samples.append(take(stack, churn.began, load.cut(restart=False)))


def run(opts: Options) -> Result:
    minutes = opts.minutes or (QUICK_MINUTES if opts.quick else MINUTES)
    sample_s = QUICK_SAMPLE_S if opts.quick else SAMPLE_S
    timing = QUICK if opts.quick else FULL
    result = Result(
        NAME,
        params={
            "minutes": minutes,
            "sample_s": sample_s,
            "nerves": HOSTS,
            "loaded_services": ", ".join(LOADED),
            "load": f"{len(LOADED)} x wrk -c{CONNECTIONS}, {DELAY_MS} ms pauses",
        },
    )
    samples: list[dict] = []
    churn_figures: dict[str, Any] = {"timing": timing, "counts": {}, "errors": 0, "events": []}
    result.figures.update(samples=samples, churn=churn_figures)
    with result.attempt("soak"), Workspace(opts.keep) as ws:
        stack = build(ws, opts.log_level)
        began = time.monotonic()
        churn = Churn(stack, timing, began, minutes * 60)
        load = Load(stack, sample_s)
        samples.append(take(stack, began, None))
        load.start()
        try:
            soak(stack, churn, load, samples, sample_s)
        finally:
            load.kill()
            churn.finish()
            churn_figures.update(
                counts=dict(churn.counts), errors=churn.errors, events=churn.events
            )
        recovering = time.monotonic()
        stack.wait_served(120)  # every instance back once the last fault is undone
        result.figures["served_again_s"] = round(time.monotonic() - recovering, 1)
    if len(samples) >= AT_LEAST + 1:
        report(result, samples, churn_figures, opts.quick)
    if "served_again_s" in result.figures:
        result.notes.append(
            f"after the last fault was undone, HAProxy served all {2 * HOSTS + ETCD_HOSTS} "
            f"instances again within {result.figures['served_again_s']} s"
        )
    return result
