"""What every benchmark reports: figures beside targets, a printed table, a JSON file.

A benchmark returns a ``Result``: sections of rows (label, value, unit, optional target),
raw figures for the JSON file, and notes. ``write_json`` adds the machine, the date and the
versions of everything measured, so a figure is never read without its context.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import math
import os
import platform
import re
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "bench" / "results"


# --------------------------------------------------------------------------- figures


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100) by linear interpolation; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary_ms(seconds: Sequence[float]) -> dict[str, float | int | None]:
    """count, p50, p99, max and mean of durations given in seconds, in milliseconds."""
    ms = [s * 1000.0 for s in seconds]
    return {
        "count": len(ms),
        "p50_ms": percentile(ms, 50),
        "p99_ms": percentile(ms, 99),
        "max_ms": max(ms) if ms else None,
        "mean_ms": sum(ms) / len(ms) if ms else None,
    }


@dataclass(frozen=True)
class Target:
    """A goal for one figure: ``value <= bound``, ``value >= bound`` or ``value == bound``."""

    op: str  # "<=", ">=" or "=="
    bound: float
    unit: str = ""

    def met(self, value: Any) -> bool | None:
        if not isinstance(value, int | float) or isinstance(value, bool):
            return None
        if self.op == ">=":
            return value >= self.bound
        return value <= self.bound if self.op == "<=" else value == self.bound

    def __str__(self) -> str:
        sign = {"<=": "≤", ">=": "≥"}.get(self.op, "=")
        return f"{sign} {fmt_number(self.bound)} {self.unit}".rstrip()


@dataclass
class Row:
    label: str
    value: Any
    unit: str = ""
    target: Target | None = None
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        met = self.target.met(self.value) if self.target else None
        return {
            "label": self.label,
            "value": self.value,
            "unit": self.unit,
            "target": str(self.target) if self.target else None,
            "met": met,
            "note": self.note,
        }


@dataclass
class Section:
    title: str
    rows: list[Row] = field(default_factory=list)

    def add(
        self, label: str, value: Any, unit: str = "", target: Target | None = None, note: str = ""
    ) -> Row:
        row = Row(label, value, unit, target, note)
        self.rows.append(row)
        return row


@dataclass
class Result:
    name: str
    params: dict[str, Any] = field(default_factory=dict)
    sections: list[Section] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    duration_s: float | None = None
    # 1-minute load average before and after: other work on the machine shows up here.
    load_average: dict[str, float] = field(default_factory=dict)

    def section(self, title: str) -> Section:
        section = Section(title)
        self.sections.append(section)
        return section

    @contextlib.contextmanager
    def attempt(self, title: str) -> Iterator[None]:
        """Run one scenario; if it fails, say so in the table and go on with the next."""
        try:
            yield
        except Exception as exc:
            text = str(exc) or type(exc).__name__
            # Where it was raised, and from where: a bare "ConnectionResetError" (CI, the
            # smoke test) could have come from any of five sockets, and the innermost line
            # alone (unix_request) not from which question.
            frames = traceback.extract_tb(exc.__traceback__)[-3:]
            at = " < ".join(f"{Path(f.filename).name}:{f.lineno} in {f.name}" for f in frames[::-1])
            at = f" (at {at})"
            self.failures.append(f"{title}: {type(exc).__name__}: {text.splitlines()[0][:200]}{at}")
            print(f"!!! {self.name} / {title}: {type(exc).__name__}: {text}", file=sys.stderr)
            traceback.print_tb(exc.__traceback__, limit=-3, file=sys.stderr)
            self.section(title).add("FAILED", f"{type(exc).__name__}: {text.splitlines()[0][:150]}")

    def missed(self) -> list[str]:
        """'section: label' of every row whose target was not met."""
        return [
            f"{s.title}: {r.label}"
            for s in self.sections
            for r in s.rows
            if r.target is not None and r.target.met(r.value) is False
        ]


# --------------------------------------------------------------------------- printing


def fmt_number(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}" if abs(value) >= 0.1 else f"{value:.3f}"
    return str(value)


def format_table(result: Result) -> str:
    """The result as plain-text tables: one per section, figures beside their targets."""
    lines = [f"== {result.name} =="]
    if result.params:
        lines.append("   " + ", ".join(f"{k}={v}" for k, v in result.params.items()))
    for section in result.sections:
        lines.append(f"-- {section.title}")
        rows = [("metric", "value", "target", "", "")]
        for row in section.rows:
            met = row.target.met(row.value) if row.target else None
            verdict = {True: "ok", False: "MISSED", None: ""}[met]
            value = f"{fmt_number(row.value)} {row.unit}".rstrip()
            target = str(row.target) if row.target else ""
            rows.append((row.label, value, target, verdict, row.note))
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        for r in rows:
            text = f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:<{widths[2]}}  "
            lines.append(f"   {text}{r[3]:<{widths[3]}}  {r[4]}".rstrip())
    for note in result.notes:
        lines.append(f"   note: {note}")
    for failure in result.failures:
        lines.append(f"   FAILED: {failure}")
    if result.duration_s is not None:
        load = result.load_average
        extra = f", load average {load['before']:.1f} -> {load['after']:.1f}" if load else ""
        lines.append(f"   (ran in {result.duration_s:.1f} s{extra})")
    return "\n".join(lines)


# --------------------------------------------------------------------------- context


def _run(args: list[str]) -> str:
    try:
        proc = subprocess.run(args, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (proc.stdout + proc.stderr).strip()


def machine() -> dict[str, Any]:
    meminfo = Path("/proc/meminfo").read_text() if Path("/proc/meminfo").exists() else ""
    mem = re.search(r"MemTotal:\s+(\d+) kB", meminfo)
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = re.search(r"model name\s*:\s*(.+)", cpuinfo)
    mhz = re.search(r"cpu MHz\s*:\s*([0-9.]+)", cpuinfo)
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "memory_gib": round(int(mem.group(1)) / 1024 / 1024, 1) if mem else None,
        "kernel": platform.release(),
        "cpu_model": model.group(1).strip() if model else platform.processor() or None,
        "cpu_mhz": float(mhz.group(1)) if mhz else None,
        "python_yardstick_ms": python_yardstick_ms(),
        "os": _os_name(),
    }


def python_yardstick_ms(runs: int = 5) -> float:
    """The best of ``runs`` timings of one fixed pure-Python loop, in ms, taken right after
    a benchmark. Machines here all call themselves "AMD EPYC", yet the same commit measured
    1.36 ms of synapse CPU per fleet write on one and 0.69 ms on another, and one machine's
    figure moved between 7.6 and 12.9 ms within an hour at a 1-minute load below 1 (its
    host's cores are shared; the guest sees no steal time): this says how fast the machine
    ran plain Python around the time of a result."""

    def loop() -> int:
        total = 0
        for i in range(200_000):
            total += i * i % 7
        return total

    best = math.inf
    for _ in range(runs):
        began = time.perf_counter()
        loop()
        best = min(best, time.perf_counter() - began)
    return round(best * 1e3, 2)


def _os_name() -> str | None:
    try:
        text = Path("/etc/os-release").read_text()
    except OSError:
        return None
    match = re.search(r'PRETTY_NAME="?([^"\n]+)', text)
    return match.group(1) if match else None


def _first_version(text: str) -> str | None:
    match = re.search(r"(\d+\.\d+(?:\.\d+)?)", text)
    return match.group(1) if match else None


def _dpkg_version(package: str) -> str | None:
    return _run(["dpkg-query", "-W", "-f=${Version}", package]) or None


@functools.cache
def versions() -> dict[str, Any]:
    sha = _run(["git", "-C", str(REPO), "rev-parse", "--short=12", "HEAD"]) or None
    dirty = bool(_run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"]))
    return {
        "smartstack_git": f"{sha}{'+dirty' if dirty and sha else ''}" if sha else None,
        "python": platform.python_version(),
        "haproxy": _first_version(_run(["haproxy", "-v"])),
        "zookeeper": _dpkg_version("zookeeper"),
        "etcd": _first_version(_run(["etcd", "--version"])),
        "wrk": _first_version(_run(["wrk", "-v"])),
    }


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()


def write_json(result: Result, quick: bool, directory: Path = RESULTS_DIR) -> Path:
    """bench/results/<name>.json with machine, date, versions, parameters and figures."""
    directory.mkdir(parents=True, exist_ok=True)
    payload = {
        "name": result.name,
        "date": now_iso(),
        "quick": quick,
        "machine": machine(),
        "versions": versions(),
        "argv": sys.argv[1:],
        "duration_s": result.duration_s,
        "load_average": result.load_average,
        "params": result.params,
        "sections": [
            {"title": s.title, "rows": [r.as_dict() for r in s.rows]} for s in result.sections
        ],
        "figures": result.figures,
        "notes": result.notes,
        "missed_targets": result.missed(),
        "failures": result.failures,
    }
    path = directory / f"{result.name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=_jsonable) + "\n")
    tmp.replace(path)
    return path


def _jsonable(value: Any) -> Any:
    if hasattr(value, "__dataclass_fields__"):
        return asdict(value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, set | tuple):
        return list(value)
    return repr(value)
