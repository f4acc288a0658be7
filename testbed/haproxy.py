"""A real HAProxy 2.6 in master-worker mode, with its admin (runtime API) and master sockets."""

from __future__ import annotations

import functools
import os
import re
import socket
import subprocess
from pathlib import Path

from .process import ManagedProcess, ServerGroup, wait_until

HAPROXY_BINARY = os.environ.get("SMARTSTACK_HAPROXY", "haproxy")

# `show servers state` format 1, in order (srv_port is the 19th field).
SERVER_STATE_COLUMNS = (
    "be_id",
    "be_name",
    "srv_id",
    "srv_name",
    "srv_addr",
    "srv_op_state",
    "srv_admin_state",
    "srv_uweight",
    "srv_iweight",
    "srv_time_since_last_change",
    "srv_check_status",
    "srv_check_result",
    "srv_check_health",
    "srv_check_state",
    "srv_agent_state",
    "bk_f_forced_id",
    "srv_f_forced_id",
    "srv_fqdn",
    "srv_port",
    "srvrecord",
    "srv_use_ssl",
    "srv_check_port",
    "srv_check_addr",
    "srv_agent_addr",
    "srv_agent_port",
)
# Columns kept as strings even when they look numeric (a server may be named "1").
_TEXT_COLUMNS = frozenset(
    {"be_name", "srv_name", "srv_addr", "srv_fqdn", "srvrecord", "srv_check_addr",
     "srv_agent_addr"}
)  # fmt: skip


@functools.cache
def haproxy_version(binary: str = HAPROXY_BINARY) -> tuple[int, int, int]:
    """(major, minor, patch) of the installed haproxy, e.g. (2, 6, 12)."""
    out = subprocess.run([binary, "-v"], capture_output=True, text=True, check=True).stdout
    match = re.search(r"version (\d+)\.(\d+)(?:\.(\d+))?", out)
    if match is None:
        raise RuntimeError(f"cannot parse haproxy version from {out!r}")
    major, minor, patch = match.groups()
    return int(major), int(minor), int(patch or 0)


def minimal_global(workdir: str | os.PathLike[str]) -> str:
    """A `global` section for HAProxyProcess; append more global lines or sections after it.

    The admin socket is where HAProxyProcess.runtime() talks; `expose-fd listeners` lets a
    reload hand listening sockets to the new worker (no refused connections during reloads).
    """
    d = Path(workdir)
    return (
        "global\n"
        f"    stats socket {d / 'admin.sock'} mode 600 level admin expose-fd listeners\n"
        f"    server-state-file {d / 'server-state'}\n"
        "    maxconn 512\n"
        # Old workers keeping a slow connection must not linger for long after a reload.
        "    hard-stop-after 10s\n"
    )


def check_config(config_path: str | os.PathLike[str], binary: str = HAPROXY_BINARY) -> None:
    """`haproxy -c`: raise ValueError with HAProxy's messages if the config is invalid."""
    proc = subprocess.run(
        [binary, "-c", "-q", "-f", str(config_path)], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise ValueError(f"invalid HAProxy config {config_path}:\n{proc.stdout}{proc.stderr}")


def unix_request(path: Path, command: str, timeout: float = 10.0, shut_write: bool = False) -> str:
    """One command on an HAProxy unix socket; the whole answer as text.

    ``shut_write``: the master CLI keeps the connection open until the client shuts its side.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(command.encode() + b"\n")
        if shut_write:
            sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(262144):
            chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def runtime_command(socket_path: str | os.PathLike[str], command: str, timeout: float = 5.0) -> str:
    """One command on an HAProxy admin (stats) socket; the answer as text."""
    return unix_request(Path(socket_path), command, timeout, shut_write=False)


def _parse_value(column: str, value: str) -> int | str:
    if column not in _TEXT_COLUMNS and re.fullmatch(r"-?\d+", value):
        return int(value)
    return value


def parse_servers_state(text: str) -> list[dict[str, int | str]]:
    """Rows of `show servers state` as dicts keyed by the header's column names."""
    columns = list(SERVER_STATE_COLUMNS)
    rows: list[dict[str, int | str]] = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("#"):
            columns = line.lstrip("#").split()
            continue
        fields = line.split()
        if len(fields) < 5:  # the version line ("1") and blank lines
            continue
        rows.append({c: _parse_value(c, v) for c, v in zip(columns, fields, strict=False)})
    return rows


def parse_show_proc(text: str) -> dict[str, list[int]]:
    """PIDs from the master's `show proc`, by section: master, workers, old_workers, programs."""
    sections: dict[str, list[int]] = {
        "master": [],
        "workers": [],
        "old_workers": [],
        "programs": [],
    }
    current = "master"
    for line in text.splitlines():
        if line.startswith("# "):
            current = line[2:].strip().replace(" ", "_")
            sections.setdefault(current, [])
            continue
        fields = line.split()
        if fields and fields[0].isdigit():
            sections[current].append(int(fields[0]))
    return sections


class HAProxyProcess(ServerGroup):
    """`haproxy -W -S <workdir>/master.sock -f <cfg>` in the foreground, as a ManagedProcess.

    Give either the config text (written to <workdir>/haproxy.cfg) or the path of a config
    file managed by someone else (synapse). The config must contain
    `stats socket <workdir>/admin.sock mode 600 level admin` (see minimal_global()).
    """

    def __init__(
        self,
        config_text: str | None = None,
        workdir: str | os.PathLike[str] | None = None,
        *,
        config_path: str | os.PathLike[str] | None = None,
        admin_socket: str | os.PathLike[str] | None = None,
        binary: str = HAPROXY_BINARY,
    ) -> None:
        if (config_text is None) == (config_path is None):
            raise ValueError("give exactly one of config_text and config_path")
        self._init_workdir(workdir, "smartstack-haproxy-")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = Path(config_path or self.workdir / "haproxy.cfg")
        if config_text is not None:
            self.config_path.write_text(config_text)
        self.admin_socket = Path(admin_socket or self.workdir / "admin.sock")
        self.master_socket = self.workdir / "master.sock"
        self.binary = binary
        self.process = ManagedProcess(
            [binary, "-W", "-S", f"{self.master_socket},mode,600", "-f", str(self.config_path)],
            self.workdir,
            name="haproxy",
        )

    @property
    def pid(self) -> int:
        """PID of the master process."""
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process.alive

    def start(self, timeout: float = 15.0) -> HAProxyProcess:
        self.process.start()
        try:
            wait_until(self._ready, timeout, what=f"HAProxy admin socket {self.admin_socket}")
        except TimeoutError as err:
            tail = self.process.describe_failure()
            self.stop()
            raise TimeoutError(
                f"{err}; does the config have `stats socket {self.admin_socket} ... level "
                f"admin`?\n{tail}"
            ) from err
        except BaseException:
            self.stop()
            raise
        return self

    def _ready(self) -> bool:
        self.process.check_alive()
        workers = self.worker_pids()
        return bool(workers) and f"Pid: {workers[0]}\n" in self.runtime("show info")

    def runtime(self, cmd: str, timeout: float = 5.0) -> str:
        """One runtime API command on the admin socket; returns the answer."""
        return unix_request(self.admin_socket, cmd, timeout, shut_write=False)

    def master(self, cmd: str, timeout: float = 5.0) -> str:
        """One command on the master CLI (it keeps the connection open: we shut our side)."""
        return unix_request(self.master_socket, cmd, timeout, shut_write=True)

    def show_proc(self) -> dict[str, list[int]]:
        return parse_show_proc(self.master("show proc"))

    def worker_pids(self) -> list[int]:
        """PIDs of the current workers (not old ones still finishing after a reload)."""
        return self.show_proc()["workers"]

    def reload(self, timeout: float = 15.0) -> list[int]:
        """Reload through the master; return the new worker PIDs once they serve the CLI.

        HAProxy 2.6 answers nothing to `reload`, so success is a new worker in `show proc`.
        A config that fails to load keeps the old worker: that surfaces as a TimeoutError.
        """
        before = set(self.worker_pids())
        self.master("reload")

        def new_workers() -> list[int]:
            self.process.check_alive()
            current = self.worker_pids()
            if not current or set(current) & before:
                return []
            # The new worker has re-bound the admin socket once it answers with its own pid.
            return current if f"Pid: {current[0]}\n" in self.runtime("show info") else []

        try:
            return wait_until(new_workers, timeout, what="a new HAProxy worker after reload")
        except TimeoutError as err:
            raise TimeoutError(f"{err}\n{self.process.describe_failure()}") from err

    def show_servers_state(self, backend: str | None = None) -> list[dict[str, int | str]]:
        cmd = "show servers state" + (f" {backend}" if backend else "")
        return parse_servers_state(self.runtime(cmd))

    def stop(self, timeout: float = 5.0) -> None:
        """Stop master and workers (SIGTERM to the group, SIGKILL after `timeout`)."""
        self.process.stop(timeout)
