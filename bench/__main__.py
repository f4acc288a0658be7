"""`python -m bench [NAME ...] [--quick] [--keep] [--registry zookeeper|etcd] [--scenario TEXT]
[--minutes N]`.

Runs the named benchmarks (all by default) one after the other. A scenario that fails
(a daemon that does not start, a state never reached) prints why, with the daemons' log
tails, and is marked FAILED in its table; the others still run; the exit status is then 1.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
import traceback
from pathlib import Path

from bench import Options
from bench.report import RESULTS_DIR, format_table, write_json

BENCHMARKS = {
    "propagation": "bench.propagation",
    "burst": "bench.burst",
    "churn": "bench.churn",
    "scale": "bench.scale",
    "failure": "bench.failure",
    "zones": "bench.zones",
    "edge": "bench.edge",
    "fleet": "bench.fleet",
    "nerve": "bench.nerve_start",
    "peer": "bench.peer",
    "soak": "bench.soak",
}
# Run only when named: peer (`make bench-peer`) needs root, a private dockerd and EasyHAProxy
# in its own virtualenv; soak (`make soak`) takes two hours.
OPT_IN = {"peer", "soak"}


def parse_args(argv: list[str] | None) -> tuple[list[str], Options, Path]:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help=f"benchmarks to run: {', '.join(BENCHMARKS)} (default: all)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes: proves the scripts work, the figures mean nothing",
    )
    parser.add_argument("--keep", action="store_true", help="keep workspaces (configs, logs)")
    parser.add_argument(
        "--registry",
        action="append",
        choices=["zookeeper", "etcd"],
        help="registries to measure (repeatable; default both)",
    )
    parser.add_argument(
        "--scenario",
        action="append",
        default=[],
        metavar="TEXT",
        help="run only the scenarios whose title matches the regex TEXT (repeatable), e.g. "
        "'zookeeper, 1 service$' (propagation) or '^zookeeper, 1000' (scale)",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning"],
        help="log level of nerve and synapse",
    )
    parser.add_argument(
        "--minutes",
        type=float,
        metavar="N",
        help="how long soak runs (default 120; with --quick 1); the others ignore it",
    )
    parser.add_argument(
        "--results-dir",
        type=Path,
        default=RESULTS_DIR,
        help=f"where <name>.json goes (default {RESULTS_DIR})",
    )
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(
            f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}"
        )
    if args.minutes is not None and not args.minutes > 0:
        parser.error("--minutes must be more than 0")
    opts = Options(
        quick=args.quick,
        keep=args.keep,
        log_level=args.log_level,
        scenarios=args.scenario,
        minutes=args.minutes,
    )
    if args.registry:
        opts.registries = list(dict.fromkeys(args.registry))
    return args.names or [n for n in BENCHMARKS if n not in OPT_IN], opts, args.results_dir


def main(argv: list[str] | None = None) -> int:
    names, opts, results_dir = parse_args(argv)
    failed = []
    began = time.monotonic()
    for name in names:
        module = importlib.import_module(BENCHMARKS[name])
        print(f"\n>>> {name}{' (quick)' if opts.quick else ''} ...", flush=True)
        started, load_before = time.monotonic(), os.getloadavg()[0]
        try:
            result = module.run(opts)
        except Exception as exc:
            failed.append(name)
            print(
                f"!!! {name} failed after {time.monotonic() - started:.1f} s: "
                f"{type(exc).__name__}: {exc}",
                file=sys.stderr,
            )
            traceback.print_tb(exc.__traceback__, limit=-4, file=sys.stderr)
            continue
        result.duration_s = time.monotonic() - started
        result.load_average = {"before": load_before, "after": os.getloadavg()[0]}
        print(format_table(result), flush=True)
        if result.failures:
            failed.append(name)
        print(f"   -> {write_json(result, opts.quick, results_dir)}", flush=True)
    print(
        f"\n{len(names) - len(failed)}/{len(names)} benchmarks ran in "
        f"{time.monotonic() - began:.0f} s" + (f"; failed: {', '.join(failed)}" if failed else "")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
