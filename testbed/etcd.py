"""Real etcd 3.4 members (one or a cluster) on 127.0.0.1 with temporary data dirs."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path

from .process import (
    ManagedProcess,
    OneProcess,
    ServerGroup,
    free_port,
    wait_until,
)
from .tls import LocalPKI

ETCD_BINARY = "/usr/bin/etcd"


def _http_get(url: str, timeout: float = 1.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:  # /health answers 503 without quorum
        return err.code, err.read()


class _EtcdMember(OneProcess):
    def __init__(self, workdir: Path, name: str, tls: bool = False) -> None:
        self.name = name
        self.workdir = workdir
        self.data_dir = workdir / f"{name}.etcd"
        self.client_port = free_port()
        self.peer_port = free_port()
        # With TLS clients, /health and /metrics are served in clear text on their own port.
        self.metrics_port = free_port() if tls else None
        self.scheme = "https" if tls else "http"
        self.process: ManagedProcess | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def client_url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.client_port}"

    @property
    def metrics_url(self) -> str:
        if self.metrics_port is None:
            return self.client_url
        return f"http://127.0.0.1:{self.metrics_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    def args(self, cluster: EtcdCluster) -> list[str]:
        args = [
            cluster.binary,
            f"--name={self.name}",
            f"--data-dir={self.data_dir}",
            "--logger=zap",
            "--log-level=warn",
            f"--listen-client-urls={self.client_url}",
            f"--advertise-client-urls={self.client_url}",
            f"--listen-peer-urls={self.peer_url}",
            f"--initial-advertise-peer-urls={self.peer_url}",
            f"--initial-cluster={cluster.initial_cluster}",
            f"--initial-cluster-token={cluster.token}",
            # Ignored once the data dir exists, so a restarted member simply rejoins.
            "--initial-cluster-state=new",
            f"--heartbeat-interval={cluster.heartbeat_ms}",
            f"--election-timeout={cluster.election_ms}",
        ]
        if cluster.tls is not None:
            args += [
                f"--cert-file={cluster.tls.server_cert}",
                f"--key-file={cluster.tls.server_key}",
                f"--trusted-ca-file={cluster.tls.ca_cert}",
                "--client-cert-auth",  # mutual TLS: a client needs a certificate of this CA
                f"--listen-metrics-urls={self.metrics_url}",
            ]
        return args + cluster.extra_args

    def start(self, cluster: EtcdCluster) -> None:
        self.process = ManagedProcess(self.args(cluster), self.workdir, name=self.name).start()

    def healthy(self) -> bool:
        if self.process is None:
            raise RuntimeError(f"{self.name} was never started")
        self.process.check_alive()
        # Short timeout: without a leader /health blocks for about a second.
        status, body = _http_get(f"{self.metrics_url}/health", timeout=0.3)
        return status == 200 and json.loads(body).get("health") == "true"

    def is_leader(self) -> bool:
        # /metrics is served on the client URL (no v2 API needed), or beside it with TLS.
        status, body = _http_get(f"{self.metrics_url}/metrics")
        return status == 200 and b"\netcd_server_is_leader 1" in body


class EtcdCluster(ServerGroup):
    """`size` etcd members (1 or 3 usually) on 127.0.0.1 free ports.

    With ``tls`` (a LocalPKI) clients must speak TLS and present a certificate of its CA;
    peers still talk in clear text.
    """

    def __init__(
        self,
        size: int = 1,
        workdir: str | os.PathLike[str] | None = None,
        heartbeat_ms: int | None = None,
        election_ms: int | None = None,
        extra_args: list[str] | None = None,
        binary: str = ETCD_BINARY,
        tls: LocalPKI | None = None,
    ) -> None:
        if size < 1:
            raise ValueError("a cluster needs at least one member")
        self._init_workdir(workdir, "smartstack-etcd-")
        # One member can elect itself at once; a cluster needs slack for 2 shared cores.
        self.heartbeat_ms = heartbeat_ms or (10 if size == 1 else 50)
        self.election_ms = election_ms or (100 if size == 1 else 500)
        self.extra_args = list(extra_args or [])
        self.binary = binary
        self.tls = tls
        self.token = f"smartstack-{os.getpid()}-{id(self):x}"
        self.members = [
            _EtcdMember(self.workdir, f"etcd{i + 1}", tls is not None) for i in range(size)
        ]

    @property
    def size(self) -> int:
        return len(self.members)

    @property
    def initial_cluster(self) -> str:
        return ",".join(f"{m.name}={m.peer_url}" for m in self.members)

    @property
    def endpoints(self) -> list[str]:
        return [m.endpoint for m in self.members]

    @property
    def client_urls(self) -> list[str]:
        return [m.client_url for m in self.members]

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def port(self) -> int:
        """Client port of the first member (handy for a single-member cluster)."""
        return self.members[0].client_port

    @property
    def pids(self) -> list[int | None]:
        return [m.pid for m in self.members]

    def start(self, timeout: float = 30.0) -> EtcdCluster:
        self.workdir.mkdir(parents=True, exist_ok=True)
        for member in self.members:
            member.start(self)
        try:
            self.wait_healthy(timeout=timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_healthy(self, indexes: list[int] | None = None, timeout: float = 30.0) -> None:
        """Wait until the given members (default: all running ones) answer /health true."""
        if indexes is None:
            indexes = [i for i, m in enumerate(self.members) if m.alive]
        members = [self.members[i] for i in indexes]
        wait_until(
            lambda: all(m.healthy() for m in members),
            timeout,
            what=f"etcd members {[m.name for m in members]} to be healthy",
        )

    def stop(self, timeout: float = 5.0) -> None:
        # One by one: SIGTERM to all at once stalls etcd's leadership transfer (~5 s).
        for member in self.members:
            if member.process is not None:
                member.process.stop(timeout)

    def kill_member(self, i: int) -> None:
        """SIGKILL member i (0-based)."""
        process = self.members[i].process
        if process is not None:
            process.kill()

    def stop_member(self, i: int, timeout: float = 5.0) -> None:
        process = self.members[i].process
        if process is not None:
            process.stop(timeout)

    def pause_member(self, i: int) -> None:
        """SIGSTOP member i: silent to its peers and clients, sockets still open (a hung
        host). ``resume_member`` or ``stop`` (which sends SIGCONT first) undoes it."""
        process = self.members[i].process
        if process is not None:
            process.pause()

    def resume_member(self, i: int) -> None:
        process = self.members[i].process
        if process is not None:
            process.resume()

    def start_member(self, i: int, timeout: float = 30.0) -> None:
        """Restart member i on its old ports and data dir: it rejoins the cluster."""
        member = self.members[i]
        if member.alive:
            return
        member.start(self)
        self.wait_healthy([i], timeout=timeout)

    def leader_index(self) -> int | None:
        for i, member in enumerate(self.members):
            try:
                if member.alive and member.is_leader():
                    return i
            except OSError:
                continue
        return None
