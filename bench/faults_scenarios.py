"""The scenarios of the reliability suite (bench/faults.py): one fault each, under load.

Each takes the running FaultStack and the mode (quick or full), injects its fault inside
a load window and returns its Figures. A scenario leaves the stack whole (members
restarted, processes resumed, the good config back) for the next one.
"""

from __future__ import annotations

import json
import re
import signal
import sys
import time
import traceback
from collections.abc import Callable

from kazoo.client import KazooClient

from bench.faults import (
    ETCD_LEASE_S,
    PATH,
    SERVICE,
    ZK_SESSION_S,
    FaultStack,
    Figures,
    send,
    timed,
)
from bench.faults_panic import checks_all_timeout
from bench.faults_registrations import nerve_kill9_restart, nerve_sighup_record
from bench.faults_reload import reload_in_flight
from bench.stack import Workspace, command, wait_for
from testbed.etcd import EtcdCluster
from testbed.process import wait_processes_gone
from testbed.zookeeper import ZK_MAIN_QUORUM, ZooKeeperEnsemble

Scenario = Callable[[FaultStack, bool], Figures]


# --------------------------------------------------------------------------- ZooKeeper


def all_members_down(stack: FaultStack) -> None:
    """kill -9 every member of the stack's registry (ZooKeeper or etcd)."""
    registry = stack.zk if stack.kind == "zookeeper" else stack.etcd
    for i in range(registry.size):
        registry.kill_member(i)


def all_members_back(stack: FaultStack) -> float:
    """Start every member again, together (one alone has no quorum to wait for); seconds
    until the registry has a quorum and both of nerve's registrations are in it."""
    began = time.perf_counter()
    if stack.kind == "zookeeper":
        for member in stack.zk.members:
            member.start(ZK_MAIN_QUORUM)
        stack.zk.wait_for_quorum(60)
    else:
        for member in stack.etcd.members:
            member.start(stack.etcd)
        stack.etcd.wait_healthy(timeout=60)
    wait_for(lambda: stack.registered() == 2, 60, "nerve's registrations back", interval=0.01)
    return time.perf_counter() - began


def zk_leader_kill(stack: FaultStack, quick: bool) -> Figures:
    return _leader_kill(stack, stack.zk, "ZooKeeper", "the ensemble")


def _leader_kill(
    stack: FaultStack, cluster: ZooKeeperEnsemble | EtcdCluster, name: str, whole: str
) -> Figures:
    """The registry's leader killed (-9): how long until another member leads; then the
    killed one starts again. ``cluster``: a ZooKeeper ensemble or an etcd cluster."""
    figures = Figures(f"{name} leader kill -9", recover_what="new leader elected")
    with stack.window(figures):
        leader = cluster.leader_index()
        if leader is None:
            raise RuntimeError(f"{whole} has no leader before the kill")
        cluster.kill_member(leader)
        figures.recover_s = timed(
            lambda: cluster.leader_index() not in (None, leader), 60, f"a new {name} leader"
        )
        cluster.start_member(leader)
    return figures


def registry_outage(label: str, note: str) -> Scenario:
    """Every member of the stack's registry killed, down 60 s (quick: 10 s), restarted."""

    def scenario(stack: FaultStack, quick: bool) -> Figures:
        down_s = 10 if quick else 60
        figures = Figures(
            f"all {label} members down {down_s} s", recover_what="registrations back after restart"
        )
        with stack.window(figures):
            all_members_down(stack)
            time.sleep(down_s)
            figures.recover_s = all_members_back(stack)
        figures.notes.append(note)
        return figures

    return scenario


def synapse_restart_in_zk_outage(stack: FaultStack, quick: bool) -> Figures:
    """synapse restarts while no ZooKeeper member answers: the new one adopts HAProxy and,
    its registry silent past startup_wait, keeps the servers of its state file."""
    silent_s = 5 if quick else 15
    figures = Figures(
        "synapse restarted while every ZooKeeper member is down",
        recover_what="ZooKeeper restart to registrations back",
    )
    syn = stack.synapse
    with stack.window(figures):
        all_members_down(stack)
        assert syn.proc is not None
        send(syn.pid, signal.SIGTERM)
        syn.proc.wait(30)
        syn.start()
        wait_for(syn.metrics, 30, "the new synapse's admin endpoint")
        time.sleep(silent_s)  # past startup_wait: the new synapse has applied its view
        origin = json.loads(syn.get("/status"))["services"][SERVICE]["origin"]
        figures.recover_s = all_members_back(stack)
    figures.notes.append(
        f"the new synapse ran {silent_s} s with no registry, its servers from: {origin} "
        "(managed mode keeps a state file by default)"
    )
    return figures


def zk_session_expiry(stack: FaultStack, quick: bool) -> Figures:
    title = "ZooKeeper session expiry (nerve SIGSTOP)"
    note = f"nerve zk_session_timeout {ZK_SESSION_S} s; frozen until its znode went"
    return _frozen_till_gone(stack, title, ZK_SESSION_S * 4, "the session to expire", note)


def _frozen_till_gone(
    stack: FaultStack, title: str, wait_s: float, what: str, note: str
) -> Figures:
    """Nerve frozen (SIGSTOP) until the registry dropped its registration (session or
    lease expired), then resumed: how long it takes to register again."""
    figures = Figures(title, recover_what="re-registered")
    nerve = stack.nerves[0]
    assert nerve.proc is not None
    with stack.window(figures):
        nerve.proc.pause()
        try:
            wait_for(lambda: stack.registered() == 1, wait_s, what)
            time.sleep(0.5)
        finally:
            nerve.proc.resume()
        figures.recover_s = timed(lambda: stack.registered() == 2, 30, "nerve to re-register")
    figures.notes.append(note)
    return figures


def hostile_records(stack: FaultStack, quick: bool) -> Figures:
    count = 1_000 if quick else 10_000
    figures = Figures(f"{count:,} hostile registry records")
    client = KazooClient(hosts=stack.zk.hosts, timeout=30)
    client.start(timeout=30)
    try:
        with stack.window(figures, settle_s=2.0):
            pending = [
                client.create_async(f"{PATH}/evil_", record, sequence=True)
                for record in _hostile(count)
            ]
            for result in pending:
                result.get(timeout=60)
            figures.recover_s = None
            stack.synapse.check_alive()
        extra = stack.backend_servers() - len(stack.want)
        figures.notes.append(
            f"{count:,} records written while traffic flowed; servers in the backend "
            f"besides the 2 real ones: {extra}; synapse alive"
        )
        for child in client.get_children(PATH):
            if child.startswith("evil_"):
                client.delete_async(f"{PATH}/{child}")
        wait_for(lambda: len(client.get_children(PATH)) == 2, 60, "hostile records deleted")
    finally:
        client.stop()
        client.close()
    return figures


def _hostile(count: int) -> list[bytes]:
    """Records no server may come from: broken JSON, injections, wrong types, huge values."""
    kinds: list[Callable[[int], object]] = [
        lambda i: b'{"host": "127.0.0.1", "port": ',  # truncated JSON
        lambda i: {"host": "127.0.0.1\n    server evil 10.9.9.9:80", "port": 80 + i % 100},
        lambda i: {"host": "127.0.0.1", "port": 8080, "name": f"x{i}\nlisten evil\n bind :1"},
        lambda i: {"host": "127.0.0.1 check backup", "port": 8080},
        lambda i: {"host": "127.0.0.1", "port": -i},
        lambda i: {"host": "127.0.0.1", "port": "eighty"},
        lambda i: {"host": "127.0.0.1", "port": 70000 + i},
        lambda i: {"host": "", "port": 8080},
        lambda i: {"host": "127.0.0.1#", "port": 8080, "name": "a;b"},
        lambda i: [1, 2, 3],
        lambda i: b"\xff\xfe\x00 not utf-8",
        lambda i: {"host": "h" * 4096, "port": 8080},
    ]
    out = []
    for i in range(count):
        record = kinds[i % len(kinds)](i)
        if i % 500 == 0:  # a few huge ones (a 1 MB znode is ZooKeeper's limit)
            record = {"host": "127.0.0.1", "port": 8080, "name": "n" * 200_000}
        out.append(record if isinstance(record, bytes) else json.dumps(record).encode())
    return out


# --------------------------------------------------------------------------- etcd


def etcd_leader_kill(stack: FaultStack, quick: bool) -> Figures:
    return _leader_kill(stack, stack.etcd, "etcd", "the etcd cluster")


def etcd_lease_expiry(stack: FaultStack, quick: bool) -> Figures:
    title = "etcd lease expiry (nerve SIGSTOP)"
    note = f"nerve etcd_lease_ttl {ETCD_LEASE_S} s; frozen until its key went"
    return _frozen_till_gone(stack, title, ETCD_LEASE_S * 6, "the lease to expire", note)


# --------------------------------------------------------------------------- HAProxy, synapse


def haproxy_kill(stack: FaultStack, quick: bool) -> Figures:
    # synapse holds the listening sockets (managed.hold_listeners): connections made while
    # HAProxy is dead wait for the restarted one. A request in flight in the killed worker
    # cannot be saved (~0.1 in flight at this load: a run can still lose one).
    figures = Figures("HAProxy kill -9", recover_what="kill to the first request served")
    view = stack.synapse.haproxy
    with stack.window(figures):
        text = view.master("show proc")
        master = re.search(r"^(\d+)\s+master", text, re.MULTILINE)
        if master is None:
            raise RuntimeError(f"no master in `show proc`:\n{text}")
        pids = [int(master.group(1)), *view.procs().workers]
        killed = time.perf_counter()
        for pid in pids:
            send(pid, signal.SIGKILL)
        wait_processes_gone(pids, 5)
        wait_for(stack.answers, 60, "HAProxy serving again", interval=0.002)
        figures.recover_s = time.perf_counter() - killed
    figures.notes.append(
        "master and workers killed at once; synapse sees the master's death through a pidfd "
        "and starts it again at once from its config and server-state files (target ≤ 0.3 s); "
        "meanwhile connections wait in the listening sockets synapse holds, which the new "
        "HAProxy takes over (managed.hold_listeners)"
    )
    return figures


def synapse_restart(sig: signal.Signals) -> Scenario:
    label = "SIGTERM" if sig == signal.SIGTERM else "kill -9"

    def scenario(stack: FaultStack, quick: bool) -> Figures:
        figures = Figures(
            f"synapse {label} + restart",
            recover_what="new synapse up and serving",
        )
        syn = stack.synapse
        with stack.window(figures):
            assert syn.proc is not None
            began = time.perf_counter()
            send(syn.pid, sig)
            syn.proc.wait(30)
            syn.start()
            wait_for(lambda: stack.serving() == stack.want, 60, "synapse serving both")
            wait_for(syn.metrics, 30, "the new synapse's admin endpoint")
            figures.recover_s = time.perf_counter() - began
        return figures

    return scenario


def synapse_broken_config_restart(stack: FaultStack, quick: bool) -> Figures:
    """A deploy pushes a config with a typo and restarts synapse with ``--no-last-good``: the
    new synapse refuses it and exits (as a first start does, with no last good copy);
    HAProxy, left running, goes on serving until the good config is back. (By default
    synapse runs its last good copy instead: docs/configuration.md, "The last good config";
    tests/integration/synapse/test_synapse_restart_last_good.py.)"""
    figures = Figures(
        "synapse restarted onto a config with a typo",
        recover_what="good config back to synapse serving",
    )
    syn = stack.synapse
    config = json.loads(syn.config_path.read_text())
    web = config["services"][SERVICE]
    typo = _with(config, web | {"discovery": web["discovery"] | {"method": "zookeper"}})
    with stack.window(figures):
        assert syn.proc is not None
        send(syn.pid, signal.SIGTERM)
        syn.proc.wait(30)
        syn.config_path.write_text(json.dumps(typo, indent=1))
        # --no-last-good: refused as a first start is (without it, synapse would run its last
        # good config: docs/configuration.md, "The last good config")
        args = [*command("synapse"), "-c", str(syn.config_path), "--log-level", stack.log_level,
                "--no-last-good"]  # fmt: skip
        refused = stack.ws.process(args, f"{syn.name}-typo", workdir=syn.dir)
        code = refused.wait(30)
        said = refused.log_tail(5)
        refused.stop()
        time.sleep(2.0)  # HAProxy alone, its last state, nobody watching the registry
        began = time.perf_counter()
        syn.start()  # writes the good config again
        wait_for(lambda: stack.serving() == stack.want, 60, "synapse serving both")
        wait_for(syn.metrics, 30, "the new synapse's admin endpoint")
        figures.recover_s = time.perf_counter() - began
    if code == 0 or "zookeper" not in said:
        raise RuntimeError(f"synapse did not refuse the typo (exit {code}):\n{said}")
    first = next((line for line in said.splitlines() if "zookeper" in line), "")
    figures.notes.append(f"the typo refused (--no-last-good), exit {code}: {first.strip()[:240]}")
    return figures


def malformed_configs(stack: FaultStack, quick: bool) -> Figures:
    figures = Figures("malformed configs on SIGHUP")
    syn = stack.synapse
    good = syn.config_path.read_text()
    config = json.loads(good)
    web = config["services"][SERVICE]
    bad = {
        "not JSON": '{"services": {"web": ',
        "unknown discovery method": json.dumps(_with(config, web | {"discovery": {"method": "x"}})),
        "port out of range": json.dumps(
            _with(config, web | {"haproxy": web["haproxy"] | {"port": 99999}})
        ),
        "a list where a map goes": json.dumps(config | {"haproxy": ["nonsense"]}),
    }
    rejected = 0
    with stack.window(figures):
        for text in bad.values():
            before = _reload_results(stack)
            syn.config_path.write_text(text)
            send(syn.pid, signal.SIGHUP)
            wait_for(lambda b=before: _reload_results(stack) != b, 20, "synapse to read it")
            rejected += _reload_results(stack)["failed"] > before["failed"]
            time.sleep(0.3)
        syn.config_path.write_text(good)
        send(syn.pid, signal.SIGHUP)
    figures.notes.append(f"{rejected} of {len(bad)} refused, running config kept: {', '.join(bad)}")
    if rejected != len(bad):
        raise RuntimeError(f"only {rejected} of {len(bad)} malformed configs were refused")
    return figures


def _with(config: dict, web: dict) -> dict:
    return config | {"services": {SERVICE: web}}


def _reload_results(stack: FaultStack) -> dict[str, float]:
    samples = stack.synapse.metrics().get("synapse_config_reloads_total", [])
    out = {"ok": 0.0, "failed": 0.0}
    for labels, value in samples:
        out[labels.get("result", "")] = value
    return out


# --------------------------------------------------------------------------- running


# name -> (registry the stack needs, scenario); run in this order on a shared stack.
SCENARIOS: dict[str, tuple[str, Scenario]] = {
    "zk-leader-kill": ("zookeeper", zk_leader_kill),
    "hostile-records": ("zookeeper", hostile_records),
    "malformed-configs": ("zookeeper", malformed_configs),
    "zk-session-expiry": ("zookeeper", zk_session_expiry),
    "haproxy-kill": ("zookeeper", haproxy_kill),
    "synapse-kill9-restart": ("zookeeper", synapse_restart(signal.SIGKILL)),
    "synapse-sigterm-restart": ("zookeeper", synapse_restart(signal.SIGTERM)),
    "synapse-broken-config-restart": ("zookeeper", synapse_broken_config_restart),
    "reload-in-flight": ("zookeeper", reload_in_flight),
    "checks-all-timeout": ("zookeeper", checks_all_timeout()),
    "zk-all-down": (
        "zookeeper",
        registry_outage(
            "ZooKeeper", "recovery counts from the restart of the members (JVM start included)"
        ),
    ),
    "synapse-restart-in-zk-outage": ("zookeeper", synapse_restart_in_zk_outage),
    "zk-nerve-kill9-restart": ("zookeeper", nerve_kill9_restart),
    "zk-nerve-sighup-record": ("zookeeper", nerve_sighup_record),
    "etcd-leader-kill": ("etcd", etcd_leader_kill),
    "etcd-lease-expiry": ("etcd", etcd_lease_expiry),
    "etcd-nerve-kill9-restart": ("etcd", nerve_kill9_restart),
    "etcd-nerve-sighup-record": ("etcd", nerve_sighup_record),
    "etcd-all-down": (
        "etcd",
        registry_outage(
            "etcd",
            f"nerve etcd_lease_ttl {ETCD_LEASE_S} s, far shorter than the outage; recovery counts "
            "from the restart of the members",
        ),
    ),
}


def run_all(
    names: list[str], quick: bool, keep: bool, log_level: str
) -> tuple[list[Figures], list[str]]:
    """Run the named scenarios, one stack per registry; a failed one is reported, not fatal."""
    figures: list[Figures] = []
    failures: list[str] = []
    for kind in ("zookeeper", "etcd"):
        mine = [n for n in SCENARIOS if n in names and SCENARIOS[n][0] == kind]
        if not mine:
            continue
        with Workspace(keep) as ws:
            try:
                stack = FaultStack(ws, kind, log_level)
            except Exception as exc:
                failures.append(f"{kind} stack: {type(exc).__name__}: {str(exc)[:300]}")
                continue
            for name in mine:
                began = time.monotonic()
                print(f">>> {name}{' (quick)' if quick else ''} ...", flush=True)
                try:
                    result = SCENARIOS[name][1](stack, quick)
                except Exception as exc:
                    failures.append(f"{name}: {type(exc).__name__}: {str(exc).splitlines()[0]}")
                    print(f"!!! {name}: {type(exc).__name__}: {exc}", file=sys.stderr)
                    traceback.print_tb(exc.__traceback__, limit=-3, file=sys.stderr)
                    continue
                figures.append(result)
                print(
                    f"    {result.failed}/{result.total} failed, recover "
                    f"{result.recover_s}, registrations {result.registrations}, "
                    f"reloads {result.reloads} ({time.monotonic() - began:.0f} s)",
                    flush=True,
                )
            if keep:
                print(f"   workspace kept: {ws.path}")
    return figures, failures
