"""A private dockerd for tests and the compose demo: own socket, data root, exec root, pid file.

It never touches the host's Docker (if any) nor its firewall: no default bridge (`--bridge=none`),
no iptables rules, no ip_forward sysctl. Containers talk to each other on user-defined bridge
networks (with Docker's embedded DNS); the host reaches them through ports published on
127.0.0.1 (docker-proxy) or the bridge IP. Stopping removes the containers and networks first (so
shutdown is quick and no bridge interface is left), then SIGTERM/SIGKILL by PID, then unmounts
whatever is left below the roots and deletes them.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import random
import shutil
import signal
import socket
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from testbed.process import (
    ManagedProcess,
    process_gone,
    wait_processes_gone,
    wait_until,
)

DOCKERD = "dockerd"
# Docker picks subnets for user-defined networks from this pool; a random /16 per daemon keeps
# two private daemons (tests and demo at once) from choosing the same subnet at the same moment.
_POOL_SECOND_OCTETS = range(18, 32)
SBIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class DockerUnavailable(RuntimeError):
    """dockerd cannot run on this machine (not installed, not root, kernel refuses...)."""


def unavailable_reason() -> str | None:
    """Why a private dockerd cannot be started here, or None when it should work."""
    if shutil.which(DOCKERD, path=SBIN_PATH) is None:
        return "dockerd is not installed (run scripts/install.sh)"
    if os.geteuid() != 0:
        return "dockerd needs root"
    return None


def _bridges_in(prefix: str) -> list[str]:
    """Bridge interfaces with an IPv4 address starting with `prefix` (e.g. "172.23.")."""
    out = subprocess.run(
        ["ip", "-j", "-4", "addr", "show", "type", "bridge"], capture_output=True, text=True
    ).stdout
    try:
        links = json.loads(out or "[]")
    except ValueError:
        return []
    return [
        link["ifname"]
        for link in links
        if any(a.get("local", "").startswith(prefix) for a in link.get("addr_info", []))
    ]


class _UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over a unix socket: the readiness probe needs no docker SDK."""

    def __init__(self, path: str, timeout: float = 2.0) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


def _mounts_below(roots: list[Path]) -> list[str]:
    """Mount points at or below any of `roots`, deepest first (unmount order)."""
    found = []
    prefixes = [str(r.resolve()) for r in roots]
    with open("/proc/self/mountinfo") as f:
        for line in f:
            # Field 5 is the mount point; spaces in it are octal-escaped.
            point = line.split()[4].encode().decode("unicode_escape")
            if any(point == p or point.startswith(p + "/") for p in prefixes):
                found.append(point)
    return sorted(set(found), key=lambda p: p.count("/"), reverse=True)


def _pids_where(file: str, needles: list[str]) -> list[int]:
    """PIDs whose /proc/PID/`file` (cmdline, cgroup) contains any of `needles`."""
    pids = []
    if not needles:
        return pids
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            text = (entry / file).read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(n in text for n in needles):
            pids.append(int(entry.name))
    return pids


class DockerDaemon:
    """One private dockerd below `workdir` (socket `workdir/docker.sock`)."""

    def __init__(
        self,
        workdir: str | os.PathLike[str],
        log_level: str = "warn",
        extra_args: Sequence[str] = (),  # more dockerd flags, e.g. ("--live-restore",)
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self.extra_args = list(extra_args)
        self.socket_path = self.workdir / "docker.sock"
        self.data_root = self.workdir / "root"
        self.exec_root = self.workdir / "exec"
        self.pidfile = self.workdir / "dockerd.pid"
        self.log_level = log_level
        self._proc: ManagedProcess | None = None
        self._bridges: set[str] = set()
        self._pool = f"172.{random.choice(_POOL_SECOND_OCTETS)}."  # prefix of our subnets
        self._bridges_before: set[str] = set()
        self._namespace = "smst-" + hashlib.sha256(str(self.workdir).encode()).hexdigest()[:10]
        if len(str(self.socket_path)) > 100:  # sun_path is 108 bytes
            raise ValueError(f"socket path too long for a unix socket: {self.socket_path}")

    # ------------------------------------------------------------------ addresses

    @property
    def base_url(self) -> str:
        return f"unix://{self.socket_path}"

    def env(self) -> dict[str, str]:
        """Environment for the docker CLI / docker-compose / the SDK's from_env()."""
        return {"DOCKER_HOST": self.base_url}

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def log_path(self) -> Path:
        return self.workdir / "dockerd.log"

    def client(self, timeout: int = 60) -> Any:
        """A docker SDK client for this daemon (API version negotiated)."""
        import docker  # imported here: testbed must not need the SDK to be importable

        return docker.DockerClient(base_url=self.base_url, version="auto", timeout=timeout)

    # ------------------------------------------------------------------ lifecycle

    def _args(self) -> list[str]:
        config = self.workdir / "daemon.json"
        config.write_text("{}\n")  # never read /etc/docker/daemon.json
        return [
            shutil.which(DOCKERD, path=SBIN_PATH) or DOCKERD,
            f"--host={self.base_url}",
            f"--data-root={self.data_root}",
            f"--exec-root={self.exec_root}",
            f"--pidfile={self.pidfile}",
            f"--config-file={config}",
            f"--log-level={self.log_level}",
            "--bridge=none",
            "--iptables=false",
            "--ip-forward=false",
            "--ip-masq=false",
            f"--default-address-pool=base={self._pool}0.0/16,size=24",
            "--shutdown-timeout=3",
            # If a system containerd runs, dockerd uses it: keep our containers out of the
            # "moby" namespace a system dockerd would share with us.
            f"--containerd-namespace={self._namespace}",
            f"--containerd-plugins-namespace={self._namespace}-plugins",
            *self.extra_args,
        ]

    def start(self, timeout: float = 60.0) -> DockerDaemon:
        reason = unavailable_reason()
        if reason:
            raise DockerUnavailable(reason)
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, PATH=SBIN_PATH + ":" + os.environ.get("PATH", ""))
        env.pop("DOCKER_HOST", None)
        if self._proc is None:  # a restart keeps the bridges it made itself
            self._bridges_before = set(_bridges_in(self._pool))
        self._proc = ManagedProcess(self._args(), self.workdir, "dockerd", env=env).start()
        try:
            wait_until(self._ready, timeout, interval=0.1, what=f"dockerd at {self.socket_path}")
        except Exception as err:
            failure = self._proc.describe_failure()
            self.stop()
            raise DockerUnavailable(f"{err}\n{failure}") from err
        return self

    def _ready(self) -> bool:
        assert self._proc is not None
        self._proc.check_alive()
        return self.request("GET", "/_ping")[0] == 200

    def request(self, method: str, path: str, timeout: float = 5.0) -> tuple[int, Any]:
        """One raw API call (status, decoded JSON or text) — for probes and teardown."""
        conn = _UnixHTTPConnection(str(self.socket_path), timeout)
        try:
            conn.request(method, path)
            resp = conn.getresponse()
            body = resp.read().decode(errors="replace")
        finally:
            conn.close()
        try:
            return resp.status, json.loads(body) if body else None
        except ValueError:
            return resp.status, body

    def _clear(self) -> None:
        """Remove containers and networks through the API: quick shutdown, no bridges left."""
        with contextlib.suppress(OSError, http.client.HTTPException):
            _, containers = self.request("GET", "/containers/json?all=1")
            for c in containers or []:
                self.request("DELETE", f"/containers/{c['Id']}?force=1&v=1", timeout=15)
            _, networks = self.request("GET", "/networks")
            for n in networks or []:
                if n.get("Driver") == "bridge":
                    name = (n.get("Options") or {}).get("com.docker.network.bridge.name")
                    self._bridges.add(name or f"br-{n['Id'][:12]}")
            self.request("POST", "/networks/prune", timeout=15)

    def _orphan_bridges(self) -> set[str]:
        """Bridges this daemon created: named by the API, or (after a crash) new in our pool."""
        return self._bridges | (set(_bridges_in(self._pool)) - self._bridges_before)

    def _leftover_pids(self) -> list[int]:
        """Shims of this daemon (by exec root) and processes of its containers (by cgroup)."""
        try:
            ids = [d.name for d in (self.data_root / "containers").iterdir()]
        except OSError:
            ids = []
        return sorted(
            set(_pids_where("cmdline", [str(self.exec_root)]) + _pids_where("cgroup", ids))
        )

    def stop(self, timeout: float = 15.0, keep_data: bool = False) -> None:
        """Stop the daemon and leave nothing behind (processes, mounts, bridges, files).

        `keep_data=True` is a restart: containers, images and networks stay in the data root
        for the next start() (restart policies bring containers back).
        """
        if self._proc is None:
            return
        if self._proc.alive and not keep_data:
            self._clear()
        self._proc.stop(timeout)
        # Shims and containers live in their own process groups: kill what is left of ours.
        leftovers = self._leftover_pids()
        for pid in leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        wait_processes_gone([p for p in leftovers if not process_gone(p)], timeout=10)
        for point in _mounts_below([self.data_root, self.exec_root]):
            subprocess.run(["umount", "-l", point], check=False, capture_output=True)
        remaining = _mounts_below([self.data_root, self.exec_root])
        if remaining:
            raise RuntimeError(f"dockerd left mounts that would not unmount: {remaining}")
        self.socket_path.unlink(missing_ok=True)
        if keep_data:
            return
        for bridge in sorted(self._orphan_bridges()):
            if Path(f"/sys/class/net/{bridge}").exists():
                subprocess.run(["ip", "link", "del", bridge], check=False, capture_output=True)
        for path in (self.data_root, self.exec_root):
            shutil.rmtree(path, ignore_errors=True)
        self.pidfile.unlink(missing_ok=True)

    def stop_daemon_only(self, timeout: float = 15.0) -> None:
        """SIGTERM dockerd alone (not its process group) and wait for it to exit; containers,
        shims and mounts are left as they are. With --live-restore the containers keep running
        and the next start() restores them (a `systemctl restart docker`)."""
        if self._proc is None:
            return
        if self._proc.alive:
            os.kill(self._proc.pid, signal.SIGTERM)
            self._proc.wait(timeout)
        self._proc.stop()  # reaps it (and whatever of its group is left: its containerd)

    def leftovers(self) -> list[str]:
        """What this daemon left on the machine after stop() (empty when clean)."""
        found = [f"mount {m}" for m in _mounts_below([self.workdir])]
        found += [f"process {p}" for p in self._leftover_pids()]
        found += [
            f"bridge {b}" for b in self._orphan_bridges() if Path(f"/sys/class/net/{b}").exists()
        ]
        found += [f"dir {p}" for p in (self.data_root, self.exec_root) if p.exists()]
        return found

    def __enter__(self) -> DockerDaemon:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<DockerDaemon {self.socket_path} pid={self.pid}>"
