"""The soak's stack and its churn: what `python -m bench soak` runs and what it does to it.

ZooKeeper (standalone) and etcd (one member); synapse with managed HAProxy watching four
services (web, api, extra in ZooKeeper, etc in etcd; a fifth, tmp, comes and goes by
SIGHUP); three nerves ("hosts"), each registering bench/backend.py processes with an HTTP
check (against an in-process HttpBackend whose /health the churn turns to 503), an exec
check (`test ! -e FLAG`) and, on two of them, a TCP check reported to etcd.

``Churn`` fires each kind of fault on a fixed period, in the same order every run, and
undoes it later (a follow-up): a check failing for a while, a maintenance through nerve's
admin API, SIGHUPs with a config change, a registry restarted, an HAProxy worker killed,
a nerve stopped (SIGSTOP) past its ZooKeeper session. Every event is logged with its time.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from bench.stack import (
    Backend,
    DaemonError,
    Nerve,
    Synapse,
    Workspace,
    etcd_discovery,
    listen_port,
    service_block,
    wait_for,
    zk_discovery,
)
from testbed.etcd import EtcdCluster
from testbed.httpbackend import HttpBackend
from testbed.zookeeper import ZooKeeperServer

HOSTS = 3
ETCD_HOSTS = 2  # hosts 0 and 1 also register "etc" in etcd
LOADED = ("web", "api", "etc")  # the frontends wrk sends traffic to
ADDED = "tmp"  # the service synapse's SIGHUPs add and remove


@dataclass(frozen=True)
class Timing:
    """One mode's churn, in seconds: each kind's (period, first at), and how long a fault
    lasts before its follow-up undoes it."""

    periods: dict[str, tuple[float, float]]
    down_s: float  # a failing check, a maintenance
    freeze_s: float  # a nerve stopped
    outage_s: float  # a registry down


# Each kind: what it does, then its (period, first at) in seconds in a full run and in a
# quick one. Full: the reviewer's soak (session 45) at its speed 2, the flaps every 10-20 s,
# the SIGHUPs every 30-40 s, the heavy faults every 2.5-4 min at staggered offsets so they
# seldom overlap. Quick (~1 minute): every kind at least once.
CHURN: dict[str, tuple[str, tuple[float, float], tuple[float, float]]] = {
    "health_flap": ("HTTP check fails, then passes", (10, 2.5), (6, 2)),
    "exec_flap": ("exec check fails, then passes", (12.5, 6), (7, 4)),
    "maintenance": ("maintenance on, then off (nerve admin API)", (20, 10), (10, 6)),
    "nerve_sighup": ("nerve SIGHUP (a service added/removed, a weight changed)", (30, 15), (12, 8)),
    "synapse_sighup": ("synapse SIGHUP (a service added/removed)", (37.5, 22.5), (15, 10)),
    "nerve_freeze": ("nerve SIGSTOP, then SIGCONT", (150, 75), (60, 20)),
    "zookeeper_restart": ("ZooKeeper restart", (180, 100), (60, 30)),
    "haproxy_worker_kill": ("HAProxy worker SIGKILL", (210, 145), (60, 40)),
    "etcd_restart": ("etcd restart", (240, 165), (60, 46)),
}
KINDS = {kind: label for kind, (label, _, _) in CHURN.items()}
# The full freeze outlasts nerve's 10 s ZooKeeper session: its znodes go and it registers
# anew; the quick one stays inside it (quick proves the script works, it measures nothing).
FULL = Timing({k: full for k, (_, full, _) in CHURN.items()}, down_s=3, freeze_s=13, outage_s=3)
QUICK = Timing({k: quick for k, (_, _, quick) in CHURN.items()}, down_s=2, freeze_s=3, outage_s=2)


@dataclass
class Host:
    """One nerve and what it registers."""

    nerve: Nerve
    health: HttpBackend  # web's HTTP check asks its /health
    api_port: int
    api_down: Path  # api's exec check fails while this file exists
    extra: bool = False  # registers "extra" (toggled by its SIGHUPs)
    heavy: bool = False  # web's weight 2 instead of 1 (ditto)


@dataclass
class Stack:
    ws: Workspace
    zk: ZooKeeperServer
    etcd: EtcdCluster
    synapse: Synapse
    hosts: list[Host]
    ports: dict[str, int]  # frontend of each service

    def check_alive(self) -> None:
        """DaemonError with its log if synapse or a nerve has exited (the soak is over)."""
        self.synapse.check_alive()
        for host in self.hosts:
            if not host.nerve.proc.alive:
                raise DaemonError(f"nerve {host.nerve.instance_id} exited\n{host.nerve.logs()}")

    def wait_served(self, timeout: float) -> None:
        """Until HAProxy serves every instance of the loaded services."""
        want = {"web": HOSTS, "api": HOSTS, "etc": ETCD_HOSTS}

        def served() -> bool:
            serving = self.synapse.haproxy.serving()
            return all(len(serving.get(s, ())) == n for s, n in want.items())

        watch = [self.synapse.proc, *(h.nerve.proc for h in self.hosts)]
        wait_for(served, timeout, "HAProxy to serve every instance", watch, interval=0.1)


def _discovery(zk: ZooKeeperServer, etcd: EtcdCluster, name: str) -> dict[str, Any]:
    if name == "etc":
        return etcd_discovery(etcd, "/soak/etc")
    return zk_discovery(zk, f"/soak/{name}")


def _zk_reported(
    zk: ZooKeeperServer, name: str, port: int, check: dict, interval: float = 1.0
) -> dict[str, Any]:
    return {
        "host": "127.0.0.1",
        "port": port,
        "check_interval": interval,
        "checks": [check],
        "reporter_type": "zookeeper",
        "zk_hosts": [zk.hosts],
        "zk_path": f"/soak/{name}",
    }


def _start_host(ws: Workspace, i: int, zk: ZooKeeperServer, etcd: EtcdCluster, log: str) -> Host:
    health = HttpBackend(f"health{i}").start()
    ws.callback(health.stop)
    web, api = Backend(ws, f"web{i}").start(), Backend(ws, f"api{i}").start()
    api_down = ws.dir(f"host{i}") / "api-down"
    # web's check asks a health page the churn can fail, not the backend itself
    http = {
        "type": "http",
        "uri": "/health",
        "port": health.port,
        "rise": 2,
        "fall": 2,
        "timeout": 0.3,
    }
    exec_check = {"type": "exec", "command": f"test ! -e {api_down}", "rise": 1, "fall": 1}
    services = {
        "web": _zk_reported(zk, "web", web.port, http, interval=0.5),
        "api": _zk_reported(zk, "api", api.port, exec_check),
    }
    if i < ETCD_HOSTS:
        services["etc"] = {
            "host": "127.0.0.1",
            "port": web.port,
            "check_interval": 1.0,
            "checks": [{"type": "tcp", "rise": 1, "fall": 2, "timeout": 0.3}],
            "reporter_type": "etcd",
            "etcd_endpoints": etcd.endpoints,
            "etcd_path": "/soak/etc",
        }
    return Host(Nerve(ws, f"host{i}", services, log).start(), health, api.port, api_down)


def build(ws: Workspace, log_level: str) -> Stack:
    """The stack, up and serving every instance."""
    zk, etcd = ws.zookeeper(), ws.etcd()
    ports = {name: listen_port() for name in (*LOADED, "extra", ADDED)}
    services = {
        name: service_block(_discovery(zk, etcd, name), ports[name]) for name in (*LOADED, "extra")
    }
    syn = Synapse(ws, services, log_level=log_level).start()
    hosts = [_start_host(ws, i, zk, etcd, log_level) for i in range(HOSTS)]
    stack = Stack(ws, zk, etcd, syn, hosts, ports)
    stack.wait_served(60)
    return stack


def _rewrite(daemon: Synapse | Nerve) -> None:
    """Its config file replaced by rename, as docs/configuration.md asks (a file written in
    place a moment ago holds the SIGHUP 2 s)."""
    fresh = daemon.config_path.with_name(daemon.config_path.name + ".new")
    fresh.write_text(json.dumps(daemon.config, indent=1))
    os.replace(fresh, daemon.config_path)


def nerve_admin(nerve: Nerve, method: str, path: str, body: dict | None = None) -> int:
    """An admin API call to nerve; its HTTP status (-1: no answer)."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{nerve.admin_port}{path}",
        data=json.dumps(body).encode() if body is not None else None,
        method=method,
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return -1


@dataclass
class Churn:
    """Fires each kind of fault when its period comes round; ``step`` from the soak's loop."""

    stack: Stack
    timing: Timing
    began: float  # time.monotonic() of the soak's start
    length_s: float  # how long it churns
    events: list[dict[str, Any]] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    errors: int = 0
    _due: dict[str, float] = field(default_factory=dict)
    _later: list[tuple[float, str, Callable[[], None]]] = field(default_factory=list)
    _frozen: int | None = None  # the host whose nerve is stopped
    _turns: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self._due = {k: self.began + first for k, (_, first) in self.timing.periods.items()}

    def log(self, kind: str, **detail: Any) -> None:
        self.events.append({"t": round(time.monotonic() - self.began, 2), "event": kind, **detail})

    def step(self, now: float) -> None:
        """Run the follow-ups that are due, then every kind whose time has come."""
        for item in [item for item in self._later if item[0] <= now]:
            self._later.remove(item)
            self._guarded(item[1], item[2])
        for kind, (period, _) in self.timing.periods.items():
            if now >= self._due[kind]:
                self._due[kind] = now + period
                if self._guarded(kind, getattr(self, kind)):
                    self.counts[kind] += 1

    def finish(self) -> None:
        """Undo every fault still in force (nerve resumed, registries up, checks passing)."""
        for _, name, undo in sorted(self._later, key=lambda item: item[0]):
            self._guarded(name, undo)
        self._later.clear()

    def _guarded(self, name: str, action: Callable[[], Any]) -> Any:
        # A churn step that fails (a socket refused mid-restart) is logged and counted; the
        # soak goes on. A daemon that died ends it (Stack.check_alive).
        try:
            return action()
        except Exception as exc:
            self.errors += 1
            self.log("churn_error", what=name, error=f"{type(exc).__name__}: {exc}"[:200])
            return None

    def _for_a_while(
        self,
        down: str,
        fault: Callable[[], Any],
        up: str,
        undo: Callable[[], Any],
        seconds: float,
        **detail: Any,
    ) -> bool:
        """``fault`` now, ``undo`` ``seconds`` later; both logged as ``down`` and ``up`` (with
        the HTTP status they returned, for nerve's admin API)."""

        def logged(event: str, action: Callable[[], Any]) -> None:
            answer = action()
            status = {"status": answer} if isinstance(answer, int) else {}
            self.log(event, **detail, **status)

        logged(down, fault)
        self._later.append((time.monotonic() + seconds, up, lambda: logged(up, undo)))
        return True

    def _host(self, kind: str) -> int:
        """The host whose turn it is for ``kind`` (each kind goes round the hosts), the next
        one if its nerve is stopped (its admin API would time out)."""
        i, self._turns[kind] = self._turns[kind] % HOSTS, self._turns[kind] + 1
        return (i + 1) % HOSTS if i == self._frozen else i

    # Each action returns True when it fired (it is counted), False when skipped.

    def health_flap(self) -> bool:
        i = self._host("health_flap")
        health = self.stack.hosts[i].health
        fail, passing = partial(health.set_healthy, False), partial(health.set_healthy, True)
        return self._for_a_while(
            "health_down", fail, "health_up", passing, self.timing.down_s, host=i
        )

    def exec_flap(self) -> bool:
        i = self._host("exec_flap")
        flag = self.stack.hosts[i].api_down
        fail, passing = flag.touch, partial(flag.unlink, missing_ok=True)
        return self._for_a_while("api_down", fail, "api_up", passing, self.timing.down_s, host=i)

    def maintenance(self) -> bool:
        i = self._host("maintenance")
        nerve = self.stack.hosts[i].nerve
        on = partial(nerve_admin, nerve, "POST", "/maintenance/web", {"reason": "soak"})
        off = partial(nerve_admin, nerve, "DELETE", "/maintenance/web")
        down_s = self.timing.down_s
        return self._for_a_while("maintenance_on", on, "maintenance_off", off, down_s, host=i)

    def nerve_sighup(self) -> bool:
        i = self._host("nerve_sighup")
        host = self.stack.hosts[i]
        host.extra, host.heavy = not host.extra, not host.heavy
        services = host.nerve.config["services"]
        if host.extra:
            tcp = {"type": "tcp", "rise": 1, "fall": 1, "timeout": 0.3}
            services["extra"] = _zk_reported(self.stack.zk, "extra", host.api_port, tcp)
        else:
            services.pop("extra", None)
        services["web"]["weight"] = 2 if host.heavy else 1  # a record rewritten
        _rewrite(host.nerve)
        os.kill(host.nerve.proc.pid, signal.SIGHUP)
        self.log("nerve_sighup", host=i, extra=host.extra, weight=services["web"]["weight"])
        return True

    def synapse_sighup(self) -> bool:
        syn = self.stack.synapse
        services = syn.config["services"]
        if services.pop(ADDED, None) is None:
            discovery = zk_discovery(self.stack.zk, f"/soak/{ADDED}")
            services[ADDED] = service_block(discovery, self.stack.ports[ADDED])
        _rewrite(syn)
        os.kill(syn.pid, signal.SIGHUP)
        self.log("synapse_sighup", added=ADDED in services)
        return True

    def nerve_freeze(self) -> bool:
        # Not while a maintenance is to be ended: its DELETE would meet a stopped nerve.
        if any(name == "maintenance_off" for _, name, _ in self._later):
            self._due["nerve_freeze"] = time.monotonic() + 1
            return False
        i = self._host("nerve_freeze")
        proc = self.stack.hosts[i].nerve.proc

        def stop() -> None:
            proc.pause()  # the group: nerve and any exec check it is running
            self._frozen = i

        def resume() -> None:
            proc.resume()
            self._frozen = None

        freeze_s = self.timing.freeze_s
        return self._for_a_while("nerve_stopped", stop, "nerve_resumed", resume, freeze_s, host=i)

    def zookeeper_restart(self) -> bool:
        zk, outage_s = self.stack.zk, self.timing.outage_s
        return self._for_a_while(
            "zookeeper_stopped", zk.stop, "zookeeper_started", zk.start, outage_s
        )

    def etcd_restart(self) -> bool:
        etcd, outage_s = self.stack.etcd, self.timing.outage_s
        stop, start = partial(etcd.stop_member, 0), partial(etcd.start_member, 0)
        return self._for_a_while("etcd_stopped", stop, "etcd_started", start, outage_s)

    def haproxy_worker_kill(self) -> bool:
        workers = self.stack.synapse.haproxy.procs().workers
        if not workers:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(max(workers), signal.SIGKILL)
        self.log("haproxy_worker_killed", pid=max(workers))
        return True
