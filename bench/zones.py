"""Zone routing under load: local zone dead or lost, local zone back, evacuate, restore.

Three zones of 2/2/6 HTTP backends (testbed's HttpBackend: each counts the requests it
answers), registered with ``labels: {zone: ...}`` in ZooKeeper or etcd; synapse in zone
az1 with ``zone_routing`` on the service (even spill; HAProxy's checks every 250 ms); a
paced client sends a steady, bounded load through HAProxy (every attempt counts:
answered 2xx/3xx or failed). Six steps, in order:

1. local zone dies: az1's servers stop, their records stay -> az2 50 %, az3 50 %
   (HAProxy fails over by itself: the other zones are backups, docs/zone-routing.md)
2. local zone back: az1's servers start again (HAProxy's checks) -> az1 100 %
3. local zone lost: az1's records are deleted       -> az2 50 %, az3 50 %
4. local zone back: az1's records are written again -> az1 100 %
5. evacuate: ``POST /zones/az1/evacuate``           -> az2 50 %, az3 50 %
6. restore: ``POST /zones/az1/restore``             -> az1 100 %

Per step: failed requests (goal 0); the time from the registry write (or the command
being sent) until the new split holds (goal <= 1 s): the backends' counters are read
every POLL_S and the split holds from the moment every zone with a share got a request
and the last request to a zone without one was answered; each zone's share of the
requests answered in the MEASURE_S after that (goal within 5 points of the target); and
HAProxy reloads (synapse's counter, goal 0).
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from typing import Any

from bench import Options
from bench.paced import PacedClient
from bench.prometheus_text import metric_sum
from bench.registry import Handle, Registry, open_registry
from bench.report import Result, Target
from bench.stack import DaemonError, Synapse, Workspace, listen_port, service_block
from smartstack.record import Registration
from testbed.httpbackend import HttpBackend

NAME = "zones"
PATH = "/bench/zones"
SERVICE = "web"
LAYOUT = {"az1": 2, "az2": 2, "az3": 6}
LOCAL = "az1"
POLL_S = 0.005
SHARE_TOLERANCE = 0.05
SPILL = {"az1": 0.0, "az2": 0.5, "az3": 0.5}
HOME = {"az1": 1.0, "az2": 0.0, "az3": 0.0}
# HAProxy's checks of a zone-routed service (on by default in managed mode, every 2 s):
# faster here, so that a zone coming back (rise 2) is in traffic within the step's 1 s.
CHECK_INTER_MS = 250

Zones = dict[str, list[HttpBackend]]


def _counts(zones: Zones) -> dict[str, int]:
    return {zone: sum(b.requests for b in backends) for zone, backends in zones.items()}


def _settle(zones: Zones, target: dict[str, float], began: float, timeout: float) -> float:
    """Seconds from ``began`` until the split holds (see the module docstring)."""
    last = _counts(zones)
    first_seen: dict[str, float] = {}
    last_stray = began  # the last request answered by a zone that should get none
    quiet_until = None
    deadline = began + timeout
    while True:
        time.sleep(POLL_S)
        now = time.perf_counter()
        counts = _counts(zones)
        for zone, count in counts.items():
            if count == last[zone]:
                continue
            if target[zone] > 0:
                first_seen.setdefault(zone, now)
            else:
                last_stray = now
        last = counts
        if all(z in first_seen for z, share in target.items() if share > 0):
            # hold: no stray request for 0.3 s after the last one
            quiet_until = max(last_stray, *first_seen.values()) + 0.3
            if now >= quiet_until:
                return max(last_stray, *first_seen.values()) - began
        if now > deadline:
            raise DaemonError(f"the split {target} did not hold within {timeout:.0f} s")


def _shares(zones: Zones, seconds: float) -> tuple[dict[str, float], int]:
    before = _counts(zones)
    time.sleep(seconds)
    after = _counts(zones)
    done = {zone: after[zone] - before[zone] for zone in zones}
    total = sum(done.values())
    return {zone: (n / total if total else 0.0) for zone, n in done.items()}, total


def _post(syn: Synapse, path: str) -> None:
    url = f"http://127.0.0.1:{syn.admin_port}{path}"
    with urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=10) as r:
        json.loads(r.read())


def _reloads(syn: Synapse) -> float:
    metrics = syn.metrics()
    total = metric_sum(metrics, "synapse_haproxy_reloads_total")
    starts = metric_sum(metrics, "synapse_haproxy_reloads_total", reason="start")
    if total is None or starts is None:
        raise DaemonError("synapse does not expose synapse_haproxy_reloads_total")
    return total - starts


def _registration(backend: HttpBackend, zone: str) -> Registration:
    return Registration(
        host="127.0.0.1", port=backend.port, name=backend.name, labels={"zone": zone}
    )


def _measure(opts: Options, kind: str) -> tuple[list[dict[str, Any]], Any]:
    """The steps on one registry: one row dict per step, and the client's result."""
    measure_s = 1.0 if opts.quick else 3.0
    with Workspace(opts.keep) as ws:
        reg: Registry = open_registry(ws, kind)
        zones: Zones = {}
        for zone, count in LAYOUT.items():
            zones[zone] = [HttpBackend(f"{zone}-{i}").start() for i in range(count)]
            for backend in zones[zone]:
                ws.callback(backend.stop)
        handles: dict[str, Handle] = {}

        def register(zone: str) -> None:
            for backend in zones[zone]:
                handles[backend.name] = reg.add(PATH, _registration(backend, zone))

        def unregister(zone: str) -> None:
            for backend in zones[zone]:
                reg.remove(handles.pop(backend.name))

        def each(zone: str, action: Callable[[HttpBackend], object]) -> None:
            for backend in zones[zone]:
                action(backend)

        for zone in LAYOUT:
            register(zone)
        port = listen_port()
        service = service_block(reg.discovery(PATH), port)
        service["zone_routing"] = {"zones": list(LAYOUT)}
        service["haproxy"]["health_check"] = {"inter_ms": CHECK_INTER_MS}
        state = ws.dir("state") / "synapse-state.json"
        syn = Synapse(
            ws,
            {SERVICE: service},
            log_level=opts.log_level,
            extra={"zone": LOCAL, "haproxy": {"state_file_path": str(state)}},
        ).start()
        client = PacedClient(port, threads=4, interval_s=0.01, max_duration_s=300).start()
        try:
            _settle(zones, HOME, time.perf_counter(), 60)
            steps: list[tuple[str, Callable[[], None], dict[str, float]]] = [
                ("local zone dies (servers stopped, records stay)",
                 lambda: each(LOCAL, HttpBackend.stop), SPILL),
                ("local zone back (servers started again)",
                 lambda: each(LOCAL, HttpBackend.start), HOME),
                ("local zone lost (records deleted)", lambda: unregister(LOCAL), SPILL),
                ("local zone back (records written)", lambda: register(LOCAL), HOME),
                ("evacuate az1 (POST /zones/az1/evacuate)",
                 lambda: _post(syn, "/zones/az1/evacuate"), SPILL),
                ("restore az1 (POST /zones/az1/restore)",
                 lambda: _post(syn, "/zones/az1/restore"), HOME),
            ]  # fmt: skip
            rows = []
            for title, change, target in steps:
                failed_before = client.failed_so_far()
                reloads_before = _reloads(syn)
                began = time.perf_counter()
                change()
                settle = _settle(zones, target, began, 30)
                shares, answered = _shares(zones, measure_s)
                rows.append(
                    {
                        "step": title,
                        "target": target,
                        "settle_s": settle,
                        "shares": shares,
                        "answered": answered,
                        "failed": client.failed_so_far() - failed_before,
                        "reloads": _reloads(syn) - reloads_before,
                    }
                )
        finally:
            load = client.finish()
    return rows, load


def run(opts: Options) -> Result:
    result = Result(
        NAME,
        params={"layout": LAYOUT, "local_zone": LOCAL, "spill": "even", "poll_ms": POLL_S * 1000},
    )
    for kind in opts.registries:
        with result.attempt(f"{kind}: zone routing under load"):
            rows, load = _measure(opts, kind)
            for row in rows:
                section = result.section(f"{kind}: {row['step']}")
                section.add("failed requests", row["failed"], target=Target("==", 0))
                section.add(
                    "change -> new split holds",
                    round(row["settle_s"] * 1000, 1),
                    "ms",
                    Target("<=", 1000, "ms"),
                )
                for zone, share in sorted(row["shares"].items()):
                    want = row["target"][zone]
                    section.add(
                        f"{zone} share (target {want * 100:.0f} %)",
                        round(abs(share - want) * 100, 2),
                        "points off",
                        Target("<=", SHARE_TOLERANCE * 100, "points"),
                        note=f"measured {share * 100:.1f} % of {row['answered']} requests",
                    )
                section.add("HAProxy reloads", row["reloads"], target=Target("==", 0))
            result.figures[kind] = rows
            result.figures[f"{kind}_load"] = load.__dict__
            result.notes.append(
                f"{kind}: {load.attempts:,} requests sent by the paced client, {load.failed} failed"
            )
    result.notes.append(
        "shares from the backends' own request counts over "
        f"{'1' if opts.quick else '3'} s after the split holds"
    )
    return result
