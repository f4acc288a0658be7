"""Propagation: one registry write -> HAProxy's runtime state shows it.

For each registry (ZooKeeper create/delete, etcd put/delete) and each load (one service;
1,000 services x 20 servers loaded beside it), a probe service gets `changes` writes one
after the other: a server is added, HAProxy is polled (every 0.25 ms, on a kept admin connection)
until the server serves, then the record is deleted and HAProxy is polled until the
server no longer serves. The clock starts before the write is sent, so a figure includes
the registry's own commit. The first adds of each address are brand-new servers
(`add server` at runtime), later ones bring a known server back (`state ready`).
An anchor server stays registered: `use_previous_backends` keeps the last list of a
service that suddenly has no server, so the probe never empties. The single-service case
runs a second time with synapse's `coalesce_ms: 20` (an optional burst window; the default
is 0: an idle synapse applies a change at once), to show what such a window costs, and on
ZooKeeper once more with nerve's `use_path_encoding` names: a ZooKeeper event names the
child but carries no data, so a plain record costs synapse one read after its event; an
encoded one is known from its name. A
scenario stops early (and says so) after BUDGET_S.

The write's time is split in two by an independent watcher on the probe's path (its own
ZooKeeper session or etcd watch stream, bench/observer.py): "write -> watch event" is the
registry's own part, "watch event -> HAProxy" is synapse's (its reads after the event, its
round, the runtime commands), up to the polling interval. That figure also holds the
poller's own part (its sleep, its round trip, its scheduling on a busy machine: ~0.9 ms
at p50 on 2 cores), so a second one comes from synapse itself: /status lists, per change
applied at runtime, when synapse read the watch event (ZooKeeper: in kazoo's thread, before
its crossing to the loop; etcd: on the loop) and when HAProxy answered its runtime
commands (``recent_changes``, time.monotonic, the clock of perf_counter here); each is
matched to the bench's change by its event falling within that change's window.

Before synapse starts, the registry gets WARM_UP writes (creates, each then deleted) on a
path nobody watches: a production registry has served many writes before this one, and a
fresh ZooKeeper JVM runs its request path interpreted for its first few hundred (measured:
write ack p50 4.3-4.8 ms over the first 80 writes, 2.2-2.5 ms after ~1,000). ZooKeeper's
own view of each sampling window comes from the server itself (bench.zk_stats: its
update and read latencies, fsync times and JVM GC pauses in that window).
"""

from __future__ import annotations

import json
import time
from typing import Any

from bench import Options
from bench.haproxy import BackendPoller, count_serving
from bench.observer import Observer
from bench.registry import Registry, load_fleet, open_registry
from bench.report import Result, Target, summary_ms
from bench.stack import DaemonError, Synapse, Workspace, service_block
from bench.zk_stats import ServerWindow
from smartstack.record import Registration

NAME = "propagation"
TARGET_P99 = Target("<=", 10, "ms")
TARGET_OWN_P50 = Target("<=", 1, "ms")
TARGET_OWN_P99 = Target("<=", 2, "ms")
# Fine enough to see synapse's own millisecond: one poll (a round trip on a kept admin
# connection, bench.haproxy.BackendPoller) costs ~0.13 ms.
POLL_S = 0.00025
SETTLE_S = 3.0  # after the after-start reads: the first whole state dump is written
PROBE = "probe"
BUDGET_S = 75.0  # per scenario: keeps `make bench` bounded when a change takes seconds
POOL = 10  # distinct probe addresses: the first POOL adds are brand-new servers
PATH_ENCODED = "zookeeper+path_encoding"  # nerve's use_path_encoding: the record in the name
WARM_UP = 1000  # registry writes before synapse starts (creates and their deletes: 2 each)
WARM_UP_S = 15.0  # at most this long


def warm_up(reg: Registry, writes: int, budget_s: float = WARM_UP_S) -> int:
    """``writes`` writes (``writes``/2 creates, each then deleted) on a path no synapse
    watches, as a running registry has served before; fewer when ``budget_s`` runs out.
    How many."""
    deadline = time.perf_counter() + budget_s
    record = Registration(host="127.0.0.1", port=29999, name="warm-up")
    done = 0
    while done < writes and time.perf_counter() < deadline:
        reg.remove(reg.add("/bench/warmup", record))
        done += 2
    return done


def _wait_state(
    syn: Synapse,
    poller: BackendPoller,
    address: tuple[str, int],
    present: bool,
    timeout: float = 30.0,
) -> float:
    """Poll the probe backend until `address` serves (or stops serving); the time it happened."""
    deadline = time.perf_counter() + timeout
    while True:
        serving = address in poller.serving()
        now = time.perf_counter()
        if serving == present:
            return now
        if now > deadline:
            state = "serve" if present else "stop serving"
            raise DaemonError(
                f"{address} did not {state} in HAProxy within {timeout:.0f} s\n{syn.logs()}"
            )
        time.sleep(POLL_S)


def measure(
    reg: Registry,
    syn: Synapse,
    observer: Observer,
    changes: int,
    budget_s: float,
    first_port: int = 31000,
) -> dict[str, list[float]]:
    """`changes` writes (adds and removals in turn), fewer if `budget_s` runs out first.
    Probe servers from `first_port` on: a later run on the same synapse gets new ones.
    "traced": synapse's own span of each change it lists (``traced_spans``)."""
    path = "/bench/probe"
    samples: dict[str, list[float]] = {
        "new": [], "known": [], "remove": [], "ack": [], "registry": [], "synapse": []
    }  # fmt: skip
    windows: list[tuple[float, float]] = []  # (write sent, HAProxy seen to change)
    poller = BackendPoller(syn.haproxy.admin_socket, PROBE)

    def timed(kind: str, start: float, address: tuple[str, int], present: bool) -> None:
        done = _wait_state(syn, poller, address, present)
        windows.append((start, done))
        samples[kind].append(done - start)
        heard = observer.after(start)
        if heard is not None:  # the registry's part, then synapse's own
            samples["registry"].append(heard - start)
            samples["synapse"].append(max(0.0, done - heard))

    stop_at = time.perf_counter() + budget_s
    try:
        for i in range(changes // 2):
            if time.perf_counter() > stop_at:
                break
            port = first_port + i % POOL
            name = f"probe-{port}"
            probe = Registration(host="127.0.0.1", port=port, name=name)
            address = (probe.host, probe.port)
            start = time.perf_counter()
            handle = reg.add(path, probe)
            samples["ack"].append(time.perf_counter() - start)
            timed("new" if i < POOL else "known", start, address, True)
            start = time.perf_counter()
            reg.remove(handle)
            samples["ack"].append(time.perf_counter() - start)
            timed("remove", start, address, False)
    finally:
        poller.close()
    status = json.loads(syn.get("/status"))
    samples["traced"] = traced_spans(windows, recent_changes(status))
    samples["express"] = [float((status.get("haproxy") or {}).get("express") or 0)]
    return samples


def recent_changes(status: dict[str, Any]) -> list[tuple[float, float]]:
    """synapse's (watch event, HAProxy acknowledged) pairs, from /status (the last 256)."""
    pairs = (status.get("reconciler") or {}).get("recent_changes") or []
    return [(float(event), float(acked)) for event, acked in pairs]


def traced_spans(
    windows: list[tuple[float, float]], pairs: list[tuple[float, float]]
) -> list[float]:
    """For each change (write sent, HAProxy seen to change): synapse's own span (acked -
    event) of the one traced change whose watch event falls in that window. A window
    with none (an older change out of the list) or several (not one change) is left out."""
    spans = []
    for start, done in windows:
        found = [acked - event for event, acked in pairs if start <= event <= done]
        if len(found) == 1:
            spans.append(found[0])
    return spans


def scenario(
    opts: Options,
    kind: str,
    services: int,
    servers: int,
    changes: int,
    result: Result,
    coalesce_ms: float | None = None,
) -> None:
    with Workspace(opts.keep) as ws:
        reg = open_registry(ws, kind)
        warmed = warm_up(reg, opts.size(WARM_UP, 20))
        fleet = load_fleet(reg, services, servers) if services else None
        anchor = Registration(host="127.0.0.1", port=30999, name="anchor")
        reg.add("/bench/probe", anchor)
        config = {PROBE: service_block(reg.discovery("/bench/probe"))}
        if fleet is not None:
            config.update(fleet.synapse_services())
        extra = {"haproxy": {"coalesce_ms": coalesce_ms}} if coalesce_ms is not None else None
        level = "warning" if services else opts.log_level
        syn = Synapse(ws, config, log_level=level, extra=extra).start()
        wait_s = 120 + services * 0.3
        syn.wait(
            lambda: (anchor.host, anchor.port) in syn.haproxy.serving(PROBE).get(PROBE, ()),
            wait_s,
            "the probe backend's anchor server to serve",
        )
        if fleet is not None:
            syn.wait(
                lambda: count_serving(syn.haproxy) >= fleet.size + 1,
                wait_s,
                f"HAProxy to serve the {fleet.size} loaded servers",
                interval=0.2,
            )
        title = f"{kind}, " + (f"{services} services x {servers} servers loaded" if services
                                else "1 service")  # fmt: skip
        if coalesce_ms is not None:
            title += f", synapse coalesce_ms: {coalesce_ms:g} (default 0)"
        measure_and_report(reg, syn, changes, result, title, fleet, warmed=warmed)
        if fleet is not None:
            # The same once synapse's after-start work is done: every backend of the new
            # HAProxy read (/status lists none unread) and the first state dump written.
            syn.wait(lambda: not unread_backends(syn), wait_s, "the after-start reads", 0.2)
            time.sleep(SETTLE_S)
            steady = f"{title}, steady state"
            measure_and_report(reg, syn, changes, result, steady, fleet, 31000 + POOL)


def unread_backends(syn: Synapse) -> list[str]:
    status = json.loads(syn.get("/status"))
    return list((status.get("haproxy") or {}).get("unread_backends") or [])


def measure_and_report(
    reg: Registry,
    syn: Synapse,
    changes: int,
    result: Result,
    title: str,
    fleet: Any,
    first_port: int = 31000,
    warmed: int | None = None,
) -> None:
    reloads_before = syn.haproxy.procs().master_reloads
    observer = reg.observer("/bench/probe")
    server = getattr(reg, "server", None)  # a standalone ZooKeeper: its own stats
    window = ServerWindow(server.port, server.gc_log) if server is not None else None
    try:
        if window is not None:
            window.start()
        samples = measure(reg, syn, observer, changes, BUDGET_S, first_port)
        server_stats = window.stop() if window is not None else None
    finally:
        observer.close()
    reloads = syn.haproxy.procs().master_reloads - reloads_before
    every = samples["new"] + samples["known"] + samples["remove"]
    stats = summary_ms(every)
    section = result.section(title)
    cut = stats["count"] < changes
    section.add(
        "changes measured",
        stats["count"],
        note=f"of {changes}: time budget of {BUDGET_S:.0f} s reached" if cut else "",
    )
    section.add("write -> HAProxy p50", stats["p50_ms"], "ms")
    section.add("write -> HAProxy p99", stats["p99_ms"], "ms", TARGET_P99)
    section.add("write -> HAProxy max", stats["max_ms"], "ms")
    for kind_name, label in (
        ("new", "brand-new server"),
        ("known", "known server back"),
        ("remove", "server removed"),
    ):
        part = summary_ms(samples[kind_name])
        if part["count"]:
            section.add(
                f"  {label} p50 / p99",
                f"{part['p50_ms']:.2f} / {part['p99_ms']:.2f}",
                "ms",
                note=f"n={part['count']}",
            )
    if warmed is not None:
        section.add("registry writes before synapse started (warm-up)", warmed)
    section.add("registry write ack p50", summary_ms(samples["ack"])["p50_ms"], "ms")
    heard, own = summary_ms(samples["registry"]), summary_ms(samples["synapse"])
    section.add(
        "write -> independent watcher's event p50 / p99",
        f"{heard['p50_ms']:.2f} / {heard['p99_ms']:.2f}" if heard["count"] else "none",
        "ms",
        note=f"n={heard['count']}: the registry's own part",
    )
    if window is not None:
        section.add(
            "ZooKeeper's own, server side (mntr, whole ms)",
            "not read" if server_stats is None else ServerWindow.summary(server_stats),
            note="its update/read latency and fsync in the sampling window; its JVM's GC"
            + ("" if server_stats is not None else " (srst or mntr got no answer)"),
        )
    note = "independent watcher's event -> the bench's poller sees it (holds the poller's part)"
    section.add("synapse's own: watch event -> HAProxy p50", own["p50_ms"], "ms",
                TARGET_OWN_P50, note=note)  # fmt: skip
    section.add("synapse's own: watch event -> HAProxy p99", own["p99_ms"], "ms",
                TARGET_OWN_P99, note=note)  # fmt: skip
    traced = summary_ms(samples["traced"])
    # Judged only when every change was traced: a partial trace could drop the slow ones.
    judged = traced["count"] == stats["count"]
    note = (
        f"n={traced['count']} of {stats['count']}: synapse's trace (/status), its watch event "
        "read (ZooKeeper: in kazoo's thread; etcd: on its loop) -> HAProxy answered its "
        "runtime commands" + ("" if judged else "; not judged: not every change was traced")
    )
    section.add("synapse's own, traced: event -> HAProxy acked p50", traced["p50_ms"], "ms",
                TARGET_OWN_P50 if judged else None, note=note)  # fmt: skip
    section.add("synapse's own, traced: event -> HAProxy acked p99", traced["p99_ms"], "ms",
                TARGET_OWN_P99 if judged else None, note=note)  # fmt: skip
    section.add(
        "applies whose commands went before their render",
        int(samples.pop("express")[0]),
        note="synapse's express path (since its start): a change of servers only",
    )
    section.add("HAProxy reloads during the changes", reloads, target=Target("==", 0))
    result.figures[title] = {
        "summary": stats,
        "by_kind": {k: summary_ms(v) for k, v in samples.items()},
        "samples_ms": {k: [round(s * 1000, 3) for s in v] for k, v in samples.items()},
        "reloads": reloads,
        "fleet_write_s": fleet.write_s if fleet else None,
        "warm_up_writes": warmed,
        "zookeeper_server": server_stats,
    }


def run(opts: Options) -> Result:
    changes = opts.size(200, 20)
    services, servers = opts.size(1000, 20), opts.size(20, 5)
    result = Result(
        NAME,
        params={"changes": changes, "loaded": f"{services}x{servers}", "poll_ms": POLL_S * 1000},
    )
    for kind in opts.registries:
        if opts.wants(title := f"{kind}, 1 service"):
            with result.attempt(title):
                scenario(opts, kind, 0, 0, changes, result)
        if kind == "zookeeper" and opts.wants(title := f"{PATH_ENCODED}, 1 service"):
            with result.attempt(title):  # no read after the event: the record is in its name
                scenario(opts, PATH_ENCODED, 0, 0, changes, result)
        if opts.wants(title := f"{kind}, 1 service, coalesce_ms: 20"):
            with result.attempt(title):
                scenario(opts, kind, 0, 0, changes, result, coalesce_ms=20)
        if opts.wants(title := f"{kind}, {services} services x {servers} servers loaded"):
            with result.attempt(title):
                scenario(opts, kind, services, servers, changes, result)
    result.notes.append(
        f"before synapse starts the registry serves up to {WARM_UP} writes on another path "
        "(warm, as a running one is); "
        "clock starts before the registry write is sent; HAProxy is polled "
        f"every {POLL_S * 1000:g} ms on its admin socket (resolution); synapse's own part "
        "starts when an independent watcher (its own session or stream) hears the change; "
        "the traced figure is synapse's own timestamps of each change (/status "
        "recent_changes): synapse read its watch event (ZooKeeper: kazoo's thread) -> "
        "HAProxy answered the runtime commands (HAProxy runs it then; the poller sees it "
        "at its next read)"
    )
    return result
