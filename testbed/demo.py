"""``make demo``: the whole system on this machine, narrated, in about a minute.

An embedded etcd, three small HTTP services each with its own nerve, synapse with a managed
HAProxy, and a client printing which backend answered. Then one service crashes, traffic
moves away, the service comes back and traffic returns; HAProxy itself is killed and its
clients wait for the new one instead of failing (testbed/demo_crash.py). Then the zone act
(testbed/demo_zones.py): a service in three availability zones, the local zone is lost,
traffic spreads evenly over the other two, and comes back; clients carrying the zone cookie
stay in their zone. The wait act (testbed/demo_wait.py): the same service stranded, az1
evacuated and the other zones' servers dead: its requests wait in HAProxy for synapse to
give az1 its weights back (wait_for_server_ms) instead of a 503. The panic act
(testbed/demo_panic.py): every app's readiness check (HAProxy's) turns slow, HAProxy marks
them all DOWN, and synapse puts them back while their nerves say they live: slow answers,
not 503s. A reload under kept-alive
clients (testbed/demo_reload.py), a nerve restarted while its instance stays in HAProxy
(demo_restart.py), a reload held for seconds while an instance is withdrawn beside it
(demo_window.py), a SIGHUP with a misspelled prefix that empties nothing (demo_typo.py), a
nerve frozen past its lease whose app turned unhealthy meanwhile: on resume it checks again
before it registers (demo_freeze.py), and last a nerve whose journal is stuck (its stderr a
full pipe) while its app turns unhealthy: withdrawn as always (demo_journal.py). All on
127.0.0.1, stopped at the end.
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import os
import shutil
import signal
import sys
import threading
import time
import urllib.request
from pathlib import Path

from testbed.demo_client import Client, detail, say
from testbed.demo_crash import haproxy_crash
from testbed.demo_freeze import freeze_act
from testbed.demo_journal import journal_act
from testbed.demo_panic import HOLD_MS, panic_act
from testbed.demo_reload import reload_act
from testbed.demo_restart import nerve_restart_act
from testbed.demo_typo import typo_act
from testbed.demo_wait import wait_act
from testbed.demo_window import slow_reload_act
from testbed.demo_zones import ZoneAct
from testbed.etcd import EtcdCluster
from testbed.haproxy import parse_servers_state, runtime_command
from testbed.httpbackend import HttpBackend
from testbed.process import (
    ManagedProcess,
    free_port,
    make_temp_dir,
    remove_temp_dir,
    rss_mb,
    wait_until,
)

SERVICE = "hello"
APPS = ("app-1", "app-2", "app-3")
CHECK_INTERVAL = 0.2
RISE, FALL = 2, 2

BIN = Path(sys.executable).parent


def show_traffic(client: Client, seconds: float) -> None:
    """Print one line per second: how many requests each backend answered."""
    for _ in range(round(seconds)):
        start = time.monotonic()
        time.sleep(1)
        counts = collections.Counter(s.backend or "FAILED" for s in client.since(start))
        cells = "  ".join(f"{name}: {counts.get(name, 0):2d}" for name in APPS)
        failed = counts.get("FAILED", 0)
        bar = "".join(name[-1] * counts.get(name, 0) for name in APPS)
        detail(f"{cells}   failed: {failed}   {bar}")


def write_json(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data, indent=2))
    return path


class Demo:
    def __init__(self, keep: bool) -> None:
        self.keep = keep
        self.workdir = make_temp_dir("smartstack-demo-")
        self.etcd = EtcdCluster(1, workdir=self.workdir / "etcd")
        self.backends = {name: HttpBackend(name) for name in APPS}
        self.nerves: dict[str, ManagedProcess] = {}
        self.synapse: ManagedProcess | None = None
        self.front_port = free_port()
        self.stats_port = free_port()
        self.synapse_admin_port = free_port()
        self.client = Client(self.front_port)
        self.reloads_before = 0
        self.zones = ZoneAct(self.workdir)

    # --- configs ------------------------------------------------------------

    def nerve_config(self, name: str) -> Path:
        backend = self.backends[name]
        return write_json(
            self.workdir / f"nerve-{name}.json",
            {
                "instance_id": name,
                "admin": {"port": free_port()},  # (the slow reload act's `nerve maint` calls it)
                "state_dir": str(self.workdir / f"nerve-{name}-state"),
                "services": {
                    SERVICE: {
                        "host": "127.0.0.1",
                        "port": backend.port,
                        "reporter_type": "etcd",
                        "etcd_endpoints": self.etcd.endpoints,
                        "etcd_path": f"/smartstack/{SERVICE}",
                        "etcd_lease_ttl": 5,  # nerve restart act: outlives a start
                        "check_interval": CHECK_INTERVAL,
                        "checks": [
                            {
                                "type": "http",
                                "uri": "/health",
                                "timeout": 0.5,
                                "rise": RISE,
                                "fall": FALL,
                            }
                        ],
                    }
                },
            },
        )

    def synapse_config(self) -> Path:
        run = self.workdir / "haproxy"
        run.mkdir(exist_ok=True)
        return write_json(
            self.workdir / "synapse.json",
            {
                "admin": {"port": self.synapse_admin_port},
                "zone": "az1",  # the zone act's synapse is in az1
                "services": {
                    **self.zones.synapse_services(self.etcd.endpoints),
                    SERVICE: {
                        "discovery": {
                            "method": "etcd",
                            "endpoints": self.etcd.endpoints,
                            "path": f"/smartstack/{SERVICE}",
                        },
                        "haproxy": {
                            "port": self.front_port,
                            "server_options": "check inter 1s",
                            # (the panic act slows /ready, HAProxy's check, not nerve's)
                            "listen": ["mode http", "option httpchk GET /ready"],
                            "health_check": {"panic_hold_ms": HOLD_MS},
                            # (no wait_for_server_ms: 1 s by default, HAProxy checks it)
                        },
                    },
                },
                "haproxy": {
                    "managed": {"stop_on_exit": True},  # the demo leaves nothing behind
                    "config_file_path": str(run / "haproxy.cfg"),
                    "socket_file_path": str(run / "admin.sock"),
                    "server_state_file": str(run / "server-state"),
                    "bind_address": "127.0.0.1",
                    "restart_interval": 1,
                    "global": [
                        f"stats socket {run}/admin.sock mode 600 level admin expose-fd listeners",
                        "maxconn 256",
                    ],
                    "defaults": [
                        "mode http",
                        "timeout connect 1s",
                        "timeout client 10s",
                        "timeout server 10s",
                        # A request that hits a server which just died is retried elsewhere.
                        "retries 3",
                        "option redispatch 1",
                        "retry-on conn-failure empty-response",
                        "balance roundrobin",
                    ],
                    "extra_sections": {
                        "listen stats": [
                            f"bind 127.0.0.1:{self.stats_port}",
                            "mode http",
                            "stats enable",
                            "stats uri /",
                            "stats refresh 2s",
                        ]
                    },
                },
            },
        )

    # --- steps ----------------------------------------------------------------

    def start(self) -> None:
        say("Starting an embedded etcd (the registry) on 127.0.0.1")
        self.etcd.start()
        detail(f"etcd at {', '.join(self.etcd.endpoints)}")

        say("Starting three HTTP services, each with its own nerve")
        for name, backend in self.backends.items():
            backend.start()
            proc = ManagedProcess(
                [str(BIN / "nerve"), "-c", str(self.nerve_config(name))],
                self.workdir,
                f"nerve-{name}",
            ).start()
            self.nerves[name] = proc
            detail(
                f"{name} serves {backend.address}; nerve (pid {proc.pid}) checks /health "
                f"every {CHECK_INTERVAL}s and registers it after {RISE} passes"
            )

        zone_nerve = self.zones.start(self.etcd.endpoints, BIN / "nerve")
        self.nerves["zones"] = zone_nerve
        detail(f"and the zone act's service: 8 servers in 3 zones, one nerve, pid {zone_nerve.pid}")

        say("Starting synapse, which starts and configures HAProxy")
        self.synapse = ManagedProcess(
            [str(BIN / "synapse"), "-c", str(self.synapse_config())],
            self.workdir,
            "synapse",
        ).start()
        wait_until(lambda: self._answers_all(), timeout=30,
                   what="HAProxy to route to all three services", interval=0.1)  # fmt: skip
        detail(f"HAProxy listens on 127.0.0.1:{self.front_port} and routes to all three")
        watcher = self.status()["services"][SERVICE]["watcher"]
        nerves = sorted(rss_mb(proc.pid) for name, proc in self.nerves.items() if name != "zones")
        low, high = f"{nerves[0]:.1f}", f"{nerves[-1]:.1f}"
        span = low if low == high else f"{low}-{high}"  # (one figure when they agree)
        detail(f"synapse reads etcd over {watcher['transport']} (etcd_transport auto: etcd's "
               f"JSON gateway for a few services, gRPC never loaded); RSS: synapse "
               f"{rss_mb(self.synapse.pid):.1f} MB, each app's nerve {span} MB "
               f"(no gRPC, aiohttp or pydantic loaded)")  # fmt: skip

    def _answers_all(self) -> bool:
        for proc in (*self.nerves.values(), self.synapse):
            if proc is not None and not proc.alive:
                raise RuntimeError(f"{proc.name} exited:\n{proc.log_tail()}")
        seen = {Client(self.front_port).request().backend for _ in range(6)}
        return seen >= set(APPS)

    def status(self) -> dict:
        """synapse's admin /status."""
        url = f"http://127.0.0.1:{self.synapse_admin_port}/status"
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.load(response)

    def haproxy_reloads(self) -> int:
        """HAProxy reloads so far, as synapse reports them on its admin /status."""
        return int(self.status()["haproxy"]["reloads"])

    def traffic(self) -> None:
        say("A client sends 25 requests per second through HAProxy; who answered:")
        self.reloads_before = self.haproxy_reloads()
        self.client.start()
        show_traffic(self.client, 4)

    def failover(self) -> float:
        victim = self.backends["app-2"]
        say("app-2 crashes: its port is closed")
        crashed = time.monotonic()
        victim.stop()
        wait_until(
            lambda: not self._in_rotation(victim.port),
            timeout=20,
            what="HAProxy to take app-2 out of rotation",
            interval=0.01,
        )
        moved = time.monotonic() - crashed
        failed = sum(1 for s in self.client.since(crashed) if s.backend is None)
        detail(
            f"nerve saw {FALL} failed checks and withdrew it; synapse took it out of HAProxy "
            f"{moved * 1000:.0f} ms after the crash; failed requests meanwhile: {failed} "
            "(HAProxy retried them on the others)"
        )
        show_traffic(self.client, 4)
        return moved

    def _in_rotation(self, port: int) -> bool:
        """Whether HAProxy has a server on this port that is not in maintenance."""
        state = runtime_command(self.workdir / "haproxy" / "admin.sock", "show servers state")
        return any(
            row.get("srv_port") == port and not int(row.get("srv_admin_state", 0)) & 0x01
            for row in parse_servers_state(state)
        )

    def recovery(self) -> float:
        say("app-2 comes back")
        back = time.monotonic()
        self.backends["app-2"].start()
        wait_until(lambda: any(s.backend == "app-2" for s in self.client.since(back)),
                   timeout=20, what="app-2 to get traffic again", interval=0.05)  # fmt: skip
        returned = min(s.at for s in self.client.since(back) if s.backend == "app-2") - back
        detail(
            f"nerve saw {RISE} passing checks and registered it again; traffic returned "
            f"after {returned:.2f} s"
        )
        show_traffic(self.client, 3)
        return returned

    def summary(self, moved: float, returned: float) -> None:
        samples = list(self.client.samples)
        failed = sum(1 for s in samples if s.backend is None)
        say("Summary")
        reloads = self.haproxy_reloads() - self.reloads_before
        detail(f"{len(samples)} requests, {failed} failed")
        detail(f"HAProxy reloads during the failover and the return: {reloads}")
        detail(
            f"HAProxy took the crashed service out {moved * 1000:.0f} ms after the crash (nerve: "
            f"{FALL} checks x {CHECK_INTERVAL}s, then synapse through HAProxy's runtime API)"
        )
        detail(f"traffic returned {returned:.2f} s after the restart")

    def zone_act(self) -> None:
        say("Zone routing: service 'shop' runs in three zones; this synapse is in az1")
        self.zones.run(functools.partial(Client, self.zones.port), self.haproxy_reloads)

    def keep_running(self) -> None:
        say("Demo is kept running (Ctrl-C to stop)")
        detail(f"service through HAProxy:  http://127.0.0.1:{self.front_port}/")
        detail(f"HAProxy stats page:       http://127.0.0.1:{self.stats_port}/")
        detail(f"synapse status:           http://127.0.0.1:{self.synapse_admin_port}/")
        detail(f"logs and configs:         {self.workdir}")
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        try:
            while not stop.wait(1):
                pass
        except KeyboardInterrupt:
            pass

    def stop(self) -> None:
        say("Stopping everything")
        self.client.stop()
        for proc in (*self.nerves.values(), self.synapse):
            if proc is not None:
                proc.terminate()
        for proc in (*self.nerves.values(), self.synapse):
            if proc is not None:
                code = proc.stop(timeout=10)
                detail(f"{proc.name} exited with {code}")
        for backend in self.backends.values():
            backend.stop()
        self.zones.stop()
        self.etcd.stop()
        detail("etcd stopped")

    def dump_logs(self) -> None:
        for proc in (*self.nerves.values(), self.synapse):
            if proc is not None and proc.log_path.exists():
                print(f"\n--- last lines of {proc.log_path.name}", file=sys.stderr)
                print(proc.log_tail(15), file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__)
    parser.add_argument("--keep", action="store_true", help="keep everything running at the end")
    args = parser.parse_args(argv)
    if shutil.which("haproxy") is None or shutil.which("etcd") is None:
        print("demo: haproxy and etcd are needed: run `make install` first", file=sys.stderr)
        return 1
    # The daemons (.venv/bin/synapse, nerve) import this checkout's code, not the one the
    # .venv was installed from (editable: run from a git worktree they ran main's).
    root = str(Path(__file__).resolve().parents[1])
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    demo = Demo(args.keep)
    ok = False
    try:
        demo.start()
        demo.traffic()
        moved = demo.failover()
        returned = demo.recovery()
        haproxy_crash(demo.status, demo.client, say, detail)
        demo.summary(moved, returned)
        demo.zone_act()
        wait_act(demo, say, detail)
        panic_act(demo, SERVICE, say, detail)
        assert demo.synapse is not None
        reload_act(demo.workdir / "synapse.json", demo.synapse.pid, demo.front_port, SERVICE,
                   demo.haproxy_reloads, say, detail)  # fmt: skip
        port = demo.backends["app-1"].port
        nerve_restart_act(demo.nerves["app-1"], demo.workdir / "nerve-app-1.json", "app-1",
                          lambda: demo._in_rotation(port), say, detail)  # fmt: skip
        slow_reload_act(demo, BIN, SERVICE, say, detail)
        typo_act(demo, SERVICE, say, detail)
        freeze_act(demo, "app-1", say, detail)
        journal_act(demo, "app-2", say, detail)
        if args.keep:
            demo.keep_running()
        ok = True
    except (RuntimeError, TimeoutError) as exc:
        print(f"\ndemo failed: {exc}", file=sys.stderr)
        demo.dump_logs()
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
    finally:
        demo.stop()
        remove_temp_dir(demo.workdir)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
