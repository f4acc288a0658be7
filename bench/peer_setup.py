"""The peer comparison's parts: a private dockerd, the contenders, HAProxy's per-server counters.

A contender is a running proxy in front of the labelled containers: its frontend port, the
Host header it routes on, a reading of HAProxy's per-server counters (by container IP) and
its reload count. EasyHAProxy runs from its own virtualenv (.venv-peer, made here with pip
on first use, never in the project's .venv); it is run as root like its image does, because
it writes /run/haproxy.pid and /var/run/haproxy.sock (fixed paths in its code).
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.haproxy import unix_request
from bench.stack import Nerve, Synapse, Workspace, listen_port, service_block, wait_for

REPO = Path(__file__).resolve().parents[1]
PEER_VENV = REPO / ".venv-peer"
EASYHAPROXY = "easyhaproxy==6.5.1"
EASY_FIXED_PATHS = (Path("/run/haproxy.pid"), Path("/var/run/haproxy.sock"))
HOST_HEADER = "web.local"
EASY_PORT = listen_port()  # one frontend port for every EasyHAProxy run (it is in the labels)
LABELS = {
    # nerve's Docker mode
    "smartstack.service": "web",
    "smartstack.port": "80",
    "smartstack.check": "http:/",
    "smartstack.check_interval": "0.25",
    # EasyHAProxy
    "easyhaproxy.http.host": HOST_HEADER,
    "easyhaproxy.http.port": str(EASY_PORT),
    "easyhaproxy.http.localport": "80",
}
COUNTED = ("stot", "econ", "eresp", "wretr", "wredis")  # any of them moving = traffic tried


def private_docker(ws: Workspace) -> tuple[Any, str, Path]:
    """A dockerd of our own, the busybox image imported, a `peer` bridge network."""
    from testbed.dockerd import DockerDaemon
    from testbed.images import busybox_image

    daemon = DockerDaemon(ws.dir("dockerd"))
    ws.callback(daemon.stop)
    daemon.start()
    client = daemon.client()
    ws.callback(client.close)
    image = busybox_image(client)
    client.networks.create("peer", driver="bridge")
    return client, image, daemon.socket_path


def stats_by_ip(admin_socket: Path) -> tuple[dict[str, int], set[str]]:
    """(sum of COUNTED per server IP over all backends, IPs HAProxy considers up)."""
    text = unix_request(admin_socket, "show stat", timeout=2)
    totals: dict[str, int] = {}
    up: set[str] = set()
    for row in csv.DictReader(io.StringIO(text.lstrip("# "))):
        if row.get("svname") in ("BACKEND", "FRONTEND") or not row.get("addr"):
            continue
        ip = row["addr"].rsplit(":", 1)[0]
        if ip.startswith("127."):  # EasyHAProxy's certbot backend; our backends are containers
            continue
        totals[ip] = totals.get(ip, 0) + sum(int(row.get(k) or 0) for k in COUNTED)
        if row.get("status", "").startswith(("UP", "no check")):
            up.add(ip)
    return totals, up


class Traffic:
    """Polls a stats reading every 50 ms in a thread; answers when an IP's counters moved."""

    def __init__(self, read: Callable[[], tuple[dict[str, int], set[str]]]) -> None:
        self.read = read
        self.samples: list[tuple[float, dict[str, int]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="peer-traffic", daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + 300  # bounded even if stop() is never called
        while not self._stop.is_set() and time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError):  # HAProxy being replaced
                self.samples.append((time.monotonic(), self.read()[0]))
            time.sleep(0.05)

    def start(self) -> Traffic:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _moves(self, ip: str) -> list[float]:
        out, prev = [], None
        for t, totals in self.samples:
            value = totals.get(ip)
            if value is not None and prev is not None and value > prev:
                out.append(t)
            prev = value if value is not None else prev
        return out

    def last_movement(self, ip: str, after: float, before: float) -> float | None:
        times = [t for t in self._moves(ip) if after <= t <= before]
        return max(times) if times else None

    def first_movement(self, ip: str, after: float) -> float | None:
        return next((t for t in self._moves(ip) if t >= after), None)


@dataclass
class Contender:
    key: str
    title: str
    port: int
    admin_socket: Path
    reloads: Callable[[], int]
    host_header: str = HOST_HEADER
    labels: dict[str, str] = field(default_factory=lambda: dict(LABELS))

    def stats(self) -> tuple[dict[str, int], set[str]]:
        return stats_by_ip(self.admin_socket)

    def wait_serving(self, ips: set[str], timeout: float) -> None:
        """Until HAProxy's stats show exactly ``ips`` and its frontend port takes connections
        (stats alone can come from an HAProxy not yet listening on this contender's port)."""
        wait_for(lambda: self.stats()[1] == ips and _accepts(self.port), timeout,
                 f"{self.title} to serve {sorted(ips)} on :{self.port}")  # fmt: skip


def _accepts(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
        return True
    return False


@contextlib.contextmanager
def _synapse(ws: Workspace, key: str, title: str, discovery: dict[str, Any]) -> Iterator[Contender]:
    port = listen_port()
    syn = Synapse(ws, {"web": service_block(discovery, port)}, name=f"synapse-{key}")
    syn.start()
    try:
        yield Contender(key, title, port, syn.haproxy.admin_socket,
                        lambda: syn.haproxy.procs().master_reloads)  # fmt: skip
    finally:
        # (the next contender of this name starts its own HAProxy: synapse leaves its running)
        syn.stop_with_haproxy()


def synapse_docker_contender(ws: Workspace, sock: Path) -> contextlib.AbstractContextManager:
    discovery = {"method": "docker", "servers": [f"unix://{sock}"],
                 "label_selector": {"bench.peer": "web"}, "container_port": 80}  # fmt: skip
    return _synapse(ws, "synapse_docker", "synapse, Docker watcher", discovery)


synapse_docker_contender.title = "synapse, Docker watcher"  # type: ignore[attr-defined]
synapse_docker_contender.key = "synapse_docker"  # type: ignore[attr-defined]


@contextlib.contextmanager
def nerve_etcd_contender(ws: Workspace, sock: Path) -> Iterator[Contender]:
    etcd = ws.etcd()
    nerve = Nerve(ws, "peerhost", {})
    nerve.config["docker"] = {
        "url": f"unix://{sock}",
        "address": "container",
        "network": "peer",
        "label_selector": {"bench.peer": "web"},
        "service_defaults": {"reporter_type": "etcd", "etcd_endpoints": etcd.endpoints,
                             "etcd_path": "/peer/{service}", "check_interval": 0.25},
    }  # fmt: skip
    nerve.start()
    discovery = {"method": "etcd", "endpoints": etcd.endpoints, "path": "/peer/web"}
    try:
        with _synapse(ws, "nerve_etcd", "nerve (Docker mode) + etcd + synapse", discovery) as c:
            yield c
    finally:
        assert nerve.proc is not None
        nerve.proc.stop(10)
        etcd.stop()


nerve_etcd_contender.title = "nerve (Docker mode) + etcd + synapse"  # type: ignore[attr-defined]
nerve_etcd_contender.key = "nerve_etcd"  # type: ignore[attr-defined]


def peer_venv() -> Path:
    """.venv-peer/bin/easy-haproxy, installing EasyHAProxy there with pip on first use."""
    script = PEER_VENV / "bin" / "easy-haproxy"
    if script.exists():
        return script
    steps = [[sys.executable, "-m", "venv", str(PEER_VENV)],
             [str(PEER_VENV / "bin" / "pip"), "install", "-q", EASYHAPROXY]]  # fmt: skip
    for step in steps:
        proc = subprocess.run(step, capture_output=True, text=True, timeout=900, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(step)} failed: {(proc.stderr or proc.stdout)[-800:]}")
    return script


def easyhaproxy_contender(refresh_s: int) -> Callable[..., Any]:
    title = f"EasyHAProxy 6.5.1, poll every {refresh_s} s" + (
        " (default)" if refresh_s == 10 else ""
    )

    @contextlib.contextmanager
    def factory(ws: Workspace, sock: Path) -> Iterator[Contender]:
        taken = [p for p in EASY_FIXED_PATHS if p.exists()]
        if taken:  # another HAProxy of EasyHAProxy's may be running: never touch it
            raise RuntimeError(f"EasyHAProxy's fixed paths exist already: {taken}")
        script = peer_venv()
        base = ws.dir(f"easyhaproxy-{refresh_s}")
        admin = base / "admin.sock"
        confd = base / "haproxy" / "conf.d"
        confd.mkdir(parents=True, exist_ok=True)
        # A custom snippet (EasyHAProxy loads conf.d/*.cfg): an admin socket to read counters.
        (confd / "admin.cfg").write_text(f"global\n    stats socket {admin} mode 600 level admin\n")
        env = dict(os.environ, DOCKER_HOST=f"unix://{sock}")
        args = [str(script), "--discover", "docker", "--base-path", str(base),
                "--refresh-conf", str(refresh_s), "--haproxy-stats-enable", "false",
                # its custom error pages are read from /etc/easyhaproxy (its image's layout)
                "--customer-errors", "false",
                "--log-level", "INFO"]  # fmt: skip
        proc = ws.process(args, f"easyhaproxy-{refresh_s}", env=env, workdir=base)

        def reloads() -> int:
            return proc.log_path.read_text(errors="replace").count("New configuration found")

        try:
            wait_for(admin.exists, 60, "EasyHAProxy's HAProxy", [proc])
            yield Contender(f"easyhaproxy_{refresh_s}s", title, EASY_PORT, admin, reloads)
        finally:
            proc.stop(10)
            for path in EASY_FIXED_PATHS:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()

    factory.title = title  # type: ignore[attr-defined]
    factory.key = f"easyhaproxy_{refresh_s}s"  # type: ignore[attr-defined]
    return factory
