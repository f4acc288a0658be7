"""`python -m bench.markdown [--update FILE] [DIR]`: bench/results/*.json as Markdown tables.

BENCHMARKS.md embeds this output between its `results:begin` / `results:end` markers
(`--update BENCHMARKS.md` replaces that block), so the published tables are exactly what
a run wrote.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from bench.report import RESULTS_DIR, fmt_number

ORDER = ("propagation", "burst", "churn", "scale", "failure", "zones", "edge", "fleet", "nerve",
         "peer", "soak")  # fmt: skip


def _value(row: dict[str, Any]) -> str:
    text = f"{fmt_number(row['value'])} {row['unit']}".rstrip()
    return f"{text} ({row['note']})" if row.get("note") else text


def render(payloads: list[dict[str, Any]]) -> str:
    if not payloads:
        return "_no results yet: run `make bench`_\n"
    first = payloads[0]
    m, v = first["machine"], first["versions"]
    dates = sorted(p["date"] for p in payloads)
    # One payload (make faults) has one date: when its results were written.
    when = f"{dates[0]} .. {dates[-1]}" if len(set(dates)) > 1 else f"written {dates[0]}"
    out = [
        f"- Run: {when} (UTC), git {v.get('smartstack_git')}"
        + (" — QUICK sizes, figures meaningless" if any(p["quick"] for p in payloads) else ""),
        f"- Machine: {m['nproc']} cores ({m['cpu_model']}), {m['memory_gib']} GiB, "
        f"kernel {m['kernel']}, {m.get('os')}"
        + (f", yardstick {m['python_yardstick_ms']} ms" if m.get("python_yardstick_ms") else ""),
        f"- Versions: HAProxy {v['haproxy']}, ZooKeeper {v['zookeeper']}, etcd {v['etcd']}, "
        f"Python {v['python']}, wrk {v.get('wrk')}",
        "",
    ]
    for p in payloads:
        out += [f"### {p['name']}", ""]
        if p.get("params"):
            out += [", ".join(f"`{k}={val}`" for k, val in p["params"].items()), ""]
        for section in p["sections"]:
            out += [f"**{section['title']}**", "", "| metric | value | target | |"]
            out.append("| --- | ---: | --- | --- |")
            for row in section["rows"]:
                verdict = {True: "ok", False: "**missed**", None: ""}[row["met"]]
                out.append(
                    f"| {row['label']} | {_value(row)} | {row['target'] or ''} | {verdict} |"
                )
            out.append("")
        out += [f"- {note}" for note in p.get("notes", [])]
        if p.get("duration_s"):
            load = p.get("load_average") or {}
            extra = (f", 1-min load average {load['before']:.1f} before, {load['after']:.1f} after"
                     if load else "")  # fmt: skip
            stick = p.get("machine", {}).get("python_yardstick_ms")
            extra += f", yardstick {stick} ms" if stick else ""  # (each run's own machine speed)
            cpu = p.get("machine", {}).get("cpu_model")
            extra += f", on {cpu}" if cpu and cpu != m["cpu_model"] else ""  # (not the header's)
            commit = (p.get("versions") or {}).get("smartstack_git") or "?"
            when = f"{p['date'][:10]} (git {commit[:7]})"  # (tables of several rounds meet here)
            out.append(f"- ran {when} in {p['duration_s']:.0f} s{extra}")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def load(directory: Path = RESULTS_DIR) -> list[dict[str, Any]]:
    found = {p.stem: json.loads(p.read_text()) for p in sorted(directory.glob("*.json"))}
    return [found[n] for n in ORDER if n in found] + [
        found[n] for n in sorted(found) if n not in ORDER
    ]


BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def update(path: Path, tables: str) -> None:
    """Replace the block between the markers in `path` with `tables`."""
    text = path.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{path} has no {BEGIN} ... {END} block")
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    path.write_text(f"{head}{BEGIN}\n{tables}{END}{tail}")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.markdown", description=__doc__)
    parser.add_argument("directory", nargs="?", type=Path, default=RESULTS_DIR)
    parser.add_argument("--update", type=Path, metavar="FILE", help="rewrite FILE's block")
    args = parser.parse_args(argv)
    tables = render(load(args.directory))
    if args.update:
        update(args.update, tables)
    else:
        sys.stdout.write(tables)


if __name__ == "__main__":
    main(sys.argv[1:])
