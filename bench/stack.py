"""Shared setup: a workspace, registries, synapse and nerve as real subprocesses.

Everything is started on 127.0.0.1 with free ports in one temporary directory and
stopped (by PID) when the workspace closes. The daemons are driven only through
their config files, the registry and HAProxy's sockets, as an operator would.
When a daemon dies or never gets ready, ``DaemonError`` carries its log's tail.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from bench.haproxy import HAProxyView
from bench.prometheus_text import parse_prometheus
from testbed.etcd import EtcdCluster
from testbed.ports import BENCH, PortPicker
from testbed.process import ManagedProcess, wait_processes_gone
from testbed.zookeeper import ZooKeeperServer

T = TypeVar("T")

BIN = Path(sys.executable).parent


class DaemonError(RuntimeError):
    """A daemon failed to start or to reach the state a benchmark waits for."""


def command(name: str) -> list[str]:
    """The console script of the venv we run in, else `python -m <name>.cli`."""
    script = BIN / name
    return [str(script)] if script.exists() else [sys.executable, "-m", f"{name}.cli"]


def this_checkout_env() -> dict[str, str]:
    """The environment for a daemon: it imports this checkout's code. .venv/bin/synapse
    imports the checkout the venv was installed from (editable), so a benchmark run from a
    git worktree measured main's daemons (a helper's before/after showed no change)."""
    root = str(Path(__file__).resolve().parents[1])
    return dict(
        os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    )


def describe(processes: Iterable[ManagedProcess | None], lines: int = 25) -> str:
    parts = []
    for proc in processes:
        if proc is not None:
            state = "running" if proc.alive else f"exited with {proc.returncode}"
            parts.append(
                f"--- {proc.name} ({state}), last lines of {proc.log_path}:\n{proc.log_tail(lines)}"
            )
    return "\n".join(parts)


def wait_for(
    predicate: Callable[[], T],
    timeout: float,
    what: str,
    watch: Iterable[ManagedProcess | None] = (),
    interval: float = 0.01,
) -> T:
    """Poll until `predicate` is truthy; DaemonError with the logs of `watch` otherwise.

    A watched process that exits ends the wait at once. Exceptions from the predicate
    count as "not yet" (a socket not there yet) and the last one is reported.
    """
    watch = [p for p in watch if p is not None]
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        dead = [p for p in watch if not p.alive]
        if dead:
            raise DaemonError(f"{dead[0].name} exited while waiting for {what}\n{describe(watch)}")
        try:
            result = predicate()
            if result:
                return result
        except Exception as exc:  # sockets and files appear while daemons start
            last = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last!r})" if last else ""
            raise DaemonError(
                f"timed out after {timeout:.0f} s waiting for {what}{detail}\n{describe(watch)}"
            )
        time.sleep(interval)


def rss_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of a process, in KiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# Ports we listen on (frontends, backends, admin) come from below the kernel's ephemeral
# range (32768+ here): a port picked there can be taken by any outgoing connection before
# it is bound, and with 1,000 frontends that happens. Fake server ports (nothing listens
# there) are 20000 and up. testbed/ports.py reserves each against other processes too.
_listen_ports = PortPicker(BENCH)


def listen_port() -> int:
    """A port below the ephemeral range, free now and not handed out before by us."""
    return _listen_ports.pick()


# --------------------------------------------------------------------------- workspace


class Workspace(contextlib.ExitStack):
    """A short temp dir (unix socket paths are limited) owning every process started in it."""

    def __init__(self, keep: bool = False) -> None:
        super().__init__()
        self.path = Path(tempfile.mkdtemp(prefix="bench-"))
        self.keep = keep
        self.callback(self._cleanup)

    def __exit__(self, *exc: object) -> bool:
        if exc[0] is not None and not self.keep:
            self.keep = True  # a failed run keeps its configs and logs for a look
            print(f"   workspace kept for inspection: {self.path}", file=sys.stderr)
        return super().__exit__(*exc)

    def _cleanup(self) -> None:
        if not self.keep:
            shutil.rmtree(self.path, ignore_errors=True)

    def dir(self, name: str) -> Path:
        path = self.path / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def zookeeper(self) -> ZooKeeperServer:
        server = ZooKeeperServer(workdir=self.dir("zk"), tick_time=500)
        self.callback(server.stop)
        return server.start()

    def etcd(self) -> EtcdCluster:
        cluster = EtcdCluster(1, workdir=self.dir("etcd"), extra_args=["--max-txn-ops=1024"])
        self.callback(cluster.stop)
        return cluster.start()

    def process(
        self,
        args: list[str],
        name: str,
        env: dict[str, str] | None = None,
        workdir: Path | None = None,
    ) -> ManagedProcess:
        proc = ManagedProcess(args, workdir or self.path, name, env=env or this_checkout_env())
        self.callback(proc.stop)
        return proc.start()


# --------------------------------------------------------------------------- synapse

DEFAULTS = [
    "mode http",
    "timeout connect 2s",
    "timeout client 30s",
    "timeout server 30s",
    "balance roundrobin",
    "retries 3",
    "option redispatch",
]


def zk_discovery(zk: ZooKeeperServer, path: str) -> dict[str, Any]:
    return {"method": "zookeeper", "hosts": [zk.hosts], "path": path}


def etcd_discovery(etcd: EtcdCluster, path: str) -> dict[str, Any]:
    return {"method": "etcd", "endpoints": etcd.endpoints, "path": path}


def service_block(discovery: dict[str, Any], port: int | None = None) -> dict[str, Any]:
    """A synapse service: HTTP backend, plus a frontend on `port` when one is given."""
    haproxy: dict[str, Any] = {"listen": ["mode http"]}
    if port is not None:
        haproxy["port"] = port
    return {"discovery": discovery, "haproxy": haproxy}


def mode_name(runtime: bool) -> str:
    """How synapse changes HAProxy: runtime API, or a reload for every change (the peers')."""
    return "runtime API" if runtime else "reload per change (do_socket: false)"


class Synapse:
    """synapse in managed-HAProxy mode, started from a generated config file."""

    def __init__(
        self,
        ws: Workspace,
        services: dict[str, dict[str, Any]],
        runtime: bool = True,
        restart_interval: float = 2.0,
        log_level: str = "info",
        name: str = "synapse",
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.ws = ws
        self.dir = ws.dir(name)
        self.name = name
        self.admin_port = listen_port()
        self.log_level = log_level
        self.config_path = self.dir / "synapse.json"
        self.haproxy_cfg = self.dir / "haproxy.cfg"
        self.haproxy = HAProxyView(self.dir / "admin.sock", self.dir / "master.sock")
        haproxy: dict[str, Any] = {
            "config_file_path": str(self.haproxy_cfg),
            "socket_file_path": str(self.haproxy.admin_socket),
            # No stats page: a fleet of synapses on one host would all want 127.0.0.1:8404.
            # Left running when synapse stops (the default: restarts never touch traffic);
            # the workspace stops it by the pid in its pid file.
            "managed": {
                "master_socket_path": str(self.haproxy.master_socket),
                "stats": {"enabled": False},
                "pid_file": str(self.dir / "haproxy.pid"),
            },
            "do_socket": runtime,
            "restart_interval": restart_interval,
            "bind_address": "127.0.0.1",
            "global": ["maxconn 4096", "hard-stop-after 10s"],
            "defaults": list(DEFAULTS),
        }
        extra = dict(extra or {})
        haproxy.update(extra.pop("haproxy", {}))
        self.config: dict[str, Any] = {
            "services": services,
            "haproxy": haproxy,
            "admin": {"host": "127.0.0.1", "port": self.admin_port},
            **extra,
        }
        self.proc: ManagedProcess | None = None
        self.profiler: ManagedProcess | None = None
        self.started_at: float | None = None

    def start(self, timeout: float = 60.0) -> Synapse:
        self.config_path.write_text(json.dumps(self.config, indent=1))
        args = [*command("synapse"), "-c", str(self.config_path), "--log-level", self.log_level]
        profile = os.environ.get("BENCH_PROFILE") == "1"
        if profile:  # registered first, so it runs after synapse has stopped
            self.ws.callback(self._finish_profile)
        self.started_at = time.monotonic()
        if self.proc is None:  # registered first: runs once synapse has stopped
            self.ws.callback(self._stop_haproxy)
        self.proc = self.ws.process(args, self.name, workdir=self.dir)
        if profile:
            self._start_profile()
        self.wait(self.haproxy.ready, timeout, "synapse's managed HAProxy to answer")
        return self

    # BENCH_PROFILE=1: py-spy samples synapse from its first moments until it exits.
    def _start_profile(self) -> None:
        assert self.proc is not None
        spy = shutil.which("py-spy", path=str(BIN)) or shutil.which("py-spy")
        if spy is None:
            raise DaemonError("BENCH_PROFILE=1 needs py-spy (pip install py-spy into .venv)")
        out = self.dir / "synapse.pyspy.txt"
        self.profiler = ManagedProcess([spy, "record", "--pid", str(self.proc.pid), "--rate",
                                        "200", "--gil", "--threads", "--format", "raw",
                                        "--output", str(out)],
                                       self.dir, "py-spy").start()  # fmt: skip

    def _finish_profile(self) -> None:
        if self.profiler is not None:
            with contextlib.suppress(Exception):
                self.profiler.wait(30)  # py-spy writes its output once synapse has exited
            self.profiler.stop()
            print(f"   profile: {self.dir / 'synapse.pyspy.txt'} (python -m bench.profile FILE)")

    def _stop_haproxy(self) -> None:
        """The HAProxy synapse left running: its master, then what is left of its group."""
        pid_file = Path(self.config["haproxy"]["managed"]["pid_file"])
        try:
            pid = int(pid_file.read_text().split()[0])
        except (OSError, ValueError):
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        with contextlib.suppress(TimeoutError):  # (an OSError: it must not skip the SIGKILL)
            wait_processes_gone([pid], 10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        pid_file.unlink(missing_ok=True)  # (no later stop signals a reused pid)

    def wait(
        self, predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.01
    ) -> T:
        return wait_for(predicate, timeout, what, [self.proc], interval)

    def check_alive(self) -> None:
        if self.proc is not None and not self.proc.alive:
            raise DaemonError(f"{self.name} exited\n{self.logs()}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop(10)

    def stop_with_haproxy(self) -> None:
        """synapse, then the HAProxy it leaves running: the next synapse of the same name
        starts a fresh one instead of adopting this one (a benchmark's fresh contender)."""
        self.stop()
        self._stop_haproxy()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def get(self, path: str, timeout: float = 10.0) -> bytes:
        url = f"http://127.0.0.1:{self.admin_port}{path}"
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.read()

    def metrics(self) -> dict[str, list[tuple[dict[str, str], float]]]:
        return parse_prometheus(self.get("/metrics").decode())

    def logs(self, lines: int = 40) -> str:
        return describe([self.proc], lines)


# --------------------------------------------------------------------------- nerve


class Nerve:
    """One nerve (one "host") registering local services, started from a config file."""

    def __init__(
        self,
        ws: Workspace,
        instance_id: str,
        services: dict[str, dict[str, Any]],
        log_level: str = "info",
    ) -> None:
        self.ws = ws
        self.instance_id = instance_id
        self.dir = ws.dir(f"nerve-{instance_id}")
        self.admin_port = listen_port()
        self.config_path = self.dir / "nerve.json"
        self.log_level = log_level
        self.config = {
            "instance_id": instance_id,
            "services": services,
            "admin": {"host": "127.0.0.1", "port": self.admin_port},
            "state_dir": str(self.dir / "state"),
        }
        self.proc: ManagedProcess | None = None

    def start(self) -> Nerve:
        self.config_path.write_text(json.dumps(self.config, indent=1))
        args = [*command("nerve"), "-c", str(self.config_path), "--log-level", self.log_level]
        self.proc = self.ws.process(args, f"nerve-{self.instance_id}", workdir=self.dir)
        return self

    def logs(self, lines: int = 40) -> str:
        return describe([self.proc], lines)


def nerve_http_service(
    zk: ZooKeeperServer,
    path: str,
    port: int,
    interval: float,
    rise: int,
    fall: int,
    maintenance_file: Path | None = None,
) -> dict[str, Any]:
    service: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "check_interval": interval,
        "checks": [{"type": "http", "uri": "/health", "rise": rise, "fall": fall, "timeout": 0.2}],
        "reporter_type": "zookeeper",
        "zk_hosts": [zk.hosts],
        "zk_path": path,
    }
    if maintenance_file is not None:
        service["maintenance_file"] = str(maintenance_file)
    return service


# --------------------------------------------------------------------------- backends


class Backend:
    """An asyncio HTTP server subprocess (bench/backend.py) on a fixed 127.0.0.1 port."""

    def __init__(self, ws: Workspace, name: str, port: int | None = None) -> None:
        self.ws = ws
        self.name = name
        self.port = port or listen_port()
        self.proc: ManagedProcess | None = None

    def start(self, timeout: float = 15.0) -> Backend:
        args = [
            sys.executable,
            "-m",
            "bench.backend",
            "--port",
            str(self.port),
            "--name",
            self.name,
        ]
        self.proc = self.ws.process(args, f"backend-{self.name}")
        wait_for(self._listening, timeout, f"backend {self.name} on :{self.port}", [self.proc])
        return self

    def _listening(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
            return True

    def stop(self) -> None:
        """SIGTERM: stop accepting, finish what is in flight, exit (a graceful deploy)."""
        if self.proc is not None:
            self.proc.stop(10)

    def kill(self) -> None:
        """SIGKILL: a crash; the port is closed at once."""
        if self.proc is not None and self.proc.alive:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
