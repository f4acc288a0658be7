"""`python -m bench.coldstart_timeline [--registry KIND] [--runs N]`: where a cold start's
time goes, from spawning synapse to HAProxy serving every server.

The scale benchmark's fleet (1,000 services x 20 servers, ``--services``/``--servers``) is
written once; then synapse is started ``--runs`` times on it (each with a new HAProxy),
traced by ``bench.coldstart_trace`` (wall-clock marks of the start's steps), while HAProxy's
state is polled every 5 ms. Prints one line per phase per run, in ms since the spawn:

- ``imports``: interpreter and synapse's modules until the config child is forked;
- ``child validates``: until its answer (``parent waits``: the part the parent was idle);
- ``daemon start``: watchers, controller, admin (the registry is connected meanwhile);
- ``registry reads``: until the first watcher's report, then until every watcher's;
- ``selection``, ``render``, ``install`` (state dump, file write, port check), ``HAProxy
  start`` (its own parse and bind until its worker answers), ``served`` (the poll).

KIND: zookeeper, zookeeper+path_encoding or etcd. A measuring tool: the figures depend on
the machine's load (say ``uptime``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

# (phase, first mark, second mark): a mark is "> name", "< name" or "= text" of the trace
PHASES: tuple[tuple[str, str, str], ...] = (
    ("imports", "spawn", "> ForkedValidation.__init__"),
    ("child validates", "< ForkedValidation.__init__", "< ForkedValidation.answer"),
    ("  parent waits", "> ForkedValidation.answer", "< ForkedValidation.answer"),
    ("daemon start", "< ForkedValidation.answer", "< SynapseDaemon.start"),
    ("reads: to the first report", "< SynapseDaemon.start", "= report #1"),
    ("reads: to every report", "= report #1", "> Reconciler._select_all"),
    ("selection", "> Reconciler._select_all", "< Reconciler._select_all"),
    ("render", "> HAProxyController._render", "< HAProxyController._render"),
    ("install: dump, file, port check", "< HAProxyController._render",
     "< ManagedHAProxy._refuse_taken_ports"),
    ("HAProxy start (parse, bind, worker)", "< ManagedHAProxy._refuse_taken_ports",
     "< ManagedHAProxy.start"),
    ("served (bench poll, 5 ms)", "< ManagedHAProxy.start", "served"),
)  # fmt: skip


def first_marks(lines: list[str], spawn: float, pid: int | None = None) -> dict[str, float]:
    """{mark: seconds after ``spawn``} of each mark's first occurrence (of process ``pid``
    when given: the forked child's own marks are left out)."""
    out: dict[str, float] = {}
    for line in lines:
        stamp, _, rest = line.partition(" ")
        mark_pid, _, mark = rest.partition(" ")
        if not mark or (pid is not None and mark_pid != str(pid)):
            continue
        out.setdefault(mark, float(stamp) - spawn)
    return out


def phases(marks: dict[str, float]) -> list[tuple[str, float | None, float | None]]:
    """(phase, start s, end s) in PHASES order; None where a mark is missing."""
    marks = {"spawn": 0.0, **marks}
    return [(name, marks.get(a), marks.get(b)) for name, a, b in PHASES]


def format_phases(rows: list[tuple[str, float | None, float | None]]) -> str:
    out = []
    for name, start, end in rows:
        if start is None or end is None:
            out.append(f"  {name:38s}      (not seen)")
        else:
            out.append(
                f"  {name:38s} {start * 1000:7.0f} -> {end * 1000:7.0f} ms  "
                f"({(end - start) * 1000:6.0f} ms)"
            )
    return "\n".join(out)


def run(kind: str, runs: int, services: int, servers: int) -> None:
    import bench.stack as stack
    from bench.haproxy import count_serving
    from bench.registry import load_fleet, open_registry

    root = str(Path(__file__).resolve().parents[1])
    os.environ["PYTHONPATH"] = os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])
    with stack.Workspace() as ws:
        fleet = load_fleet(open_registry(ws, kind), services, servers, prefix="/bench/scale")
        for i in range(runs):
            syn = stack.Synapse(ws, fleet.synapse_services(), name=f"synapse{i}")
            trace = syn.dir / "trace.txt"
            traced = [sys.executable, "-m", "bench.coldstart_trace", str(trace)]
            original, stack.command = stack.command, lambda name, t=traced: t  # type: ignore[misc]
            try:
                wall, mono = time.time(), time.monotonic()
                syn.start(timeout=120)
            finally:
                stack.command = original
            assert syn.started_at is not None
            spawn = wall + (syn.started_at - mono)
            while count_serving(syn.haproxy) < fleet.size:
                syn.check_alive()
                time.sleep(0.005)
            served = time.monotonic() - syn.started_at
            cpu = stack.cpu_seconds(syn.pid)
            marks = first_marks(trace.read_text().splitlines(), spawn, syn.pid)
            marks["served"] = served
            load = os.getloadavg()[0]
            print(f"{kind}, run {i + 1}: served after {served:.3f} s, synapse CPU {cpu:.2f} s "
                  f"(1-minute load {load:.2f})")  # fmt: skip
            print(format_phases(phases(marks)), flush=True)
            syn.stop()
            syn._stop_haproxy()  # (each run has its own HAProxy: not one per run left)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--registry", default="zookeeper")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--servers", type=int, default=20)
    args = parser.parse_args(argv)
    run(args.registry, args.runs, args.services, args.servers)


if __name__ == "__main__":
    main()
