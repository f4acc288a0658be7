"""HAProxy as the benchmarks see it: its admin socket and master socket, nothing else.

A server "serves" when HAProxy would send it traffic (operational state running, no
maintenance or drain bit); it is "gone" when it is absent or in maintenance. Servers
are matched by address and port, whatever name synapse gave them.
"""

from __future__ import annotations

import csv
import io
import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from testbed.haproxy import parse_servers_state, parse_show_proc, unix_request

# srv_admin_state bits: forced/inherited/config/resolution/hostname maintenance, drain.
MAINT_BITS = 0x01 | 0x02 | 0x04 | 0x20 | 0x80
DRAIN_BITS = 0x08 | 0x10
SRV_RUNNING = 2

Address = tuple[str, int]


# What a read-only master CLI question may meet while the master re-executes itself (after
# its start, in wait mode, and at every reload): the socket file gone or not listening yet,
# or a connection queued on the listener it closed (reset, or our command cut off).
MASTER_REEXEC_ERRORS = (
    ConnectionRefusedError,
    FileNotFoundError,
    ConnectionResetError,
    BrokenPipeError,
    BlockingIOError,
)


def serves(row: dict) -> bool:
    admin = int(row.get("srv_admin_state", 0))
    return int(row.get("srv_op_state", 0)) == SRV_RUNNING and not admin & (MAINT_BITS | DRAIN_BITS)


@dataclass
class Procs:
    master_reloads: int
    workers: list[int]
    old_workers: list[int]


class HAProxyView:
    def __init__(self, admin_socket: Path, master_socket: Path) -> None:
        self.admin_socket = Path(admin_socket)
        self.master_socket = Path(master_socket)

    def runtime(self, command: str) -> str:
        return unix_request(self.admin_socket, command)

    def master(self, command: str, retry_s: float = 10.0) -> str:
        """A read-only master CLI command (`show proc`), retried while the master re-executes.

        Not for `reload`: a reset connection may have carried it already.
        """
        deadline = time.monotonic() + retry_s
        while True:
            try:
                return unix_request(self.master_socket, command, shut_write=True)
            except MASTER_REEXEC_ERRORS:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    def ready(self) -> bool:
        return "Pid:" in self.runtime("show info")

    def servers(self, backend: str | None = None) -> list[dict]:
        text = self.runtime("show servers state" + (f" {backend}" if backend else ""))
        if text.startswith(("Can't find", "Unknown")):
            raise LookupError(text.strip())
        return parse_servers_state(text)

    def by_address(self, backend: str | None = None) -> dict[str, dict[Address, dict]]:
        """{backend: {(addr, port): row}}; a serving row wins over a stale one."""
        out: dict[str, dict[Address, dict]] = {}
        for row in self.servers(backend):
            rows = out.setdefault(str(row["be_name"]), {})
            key = (str(row["srv_addr"]), int(row["srv_port"]))
            if key not in rows or serves(row):
                rows[key] = row
        return out

    def serving(self, backend: str | None = None) -> dict[str, set[Address]]:
        """{backend: {(addr, port) of every server HAProxy sends traffic to}}."""
        return {
            be: {a for a, row in rows.items() if serves(row)}
            for be, rows in self.by_address(backend).items()
        }

    def procs(self) -> Procs:
        """Reload count of the master and worker pids, from `show proc` on the master CLI."""
        text = self.master("show proc")
        pids = parse_show_proc(text)
        match = re.search(r"^\d+\s+master\s+(\d+)", text, re.MULTILINE)
        return Procs(int(match.group(1)) if match else 0, pids["workers"], pids["old_workers"])

    def server_stats(self, backend: str) -> dict[Address, dict[str, str]]:
        """`show stat` rows of one backend's servers, keyed by address."""
        text = self.runtime("show stat")
        lines = text.lstrip("# ").splitlines()
        out: dict[Address, dict[str, str]] = {}
        for row in csv.DictReader(io.StringIO("\n".join(lines))):
            if row.get("pxname") != backend or row.get("svname") in ("BACKEND", "FRONTEND"):
                continue
            match = re.fullmatch(r"(.+):(\d+)", row.get("addr") or "")
            if match:
                out[(match.group(1), int(match.group(2)))] = row
        return out


class BackendPoller:
    """What one backend serves, polled on one kept prompt-mode admin connection.

    A poll is one `show servers state <backend>` round trip: no connect, no other
    backend's rows. The propagation benchmark polls every 0.25 ms, and a poll that costs
    a connect and a parse of everything would be most of what it measures. A connection
    HAProxy closed (idle timeout, reload) is opened again.
    """

    PROMPT = b"\n> "

    def __init__(self, admin_socket: Path, backend: str, timeout: float = 10.0) -> None:
        self.path, self.backend, self.timeout = Path(admin_socket), backend, timeout
        self._sock: socket.socket | None = None

    def _ask(self, command: str) -> str:
        if self._sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            sock.connect(str(self.path))
            self._sock = sock
            self._ask("prompt")  # its answer is empty; every answer ends with the prompt
        self._sock.sendall(command.encode() + b"\n")
        data = b""
        while not data.endswith(self.PROMPT):
            chunk = self._sock.recv(262144)
            if not chunk:
                raise ConnectionResetError("HAProxy closed the admin connection")
            data += chunk
        return data.decode(errors="replace")

    def serving(self) -> set[Address]:
        """(addr, port) of every server of the backend HAProxy sends traffic to."""
        for attempt in (1, 2):
            try:
                text = self._ask(f"show servers state {self.backend}")
                break
            except OSError:
                self.close()
                if attempt == 2:
                    raise
        rows = parse_servers_state(text.removesuffix(self.PROMPT.decode()))
        return {(str(r["srv_addr"]), int(r["srv_port"])) for r in rows if serves(r)}

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def count_serving(view: HAProxyView) -> int:
    """Servers HAProxy sends traffic to, over all backends; cheap enough to poll at 20,000."""
    count = 0
    for line in view.runtime("show servers state").splitlines():
        fields = line.split(maxsplit=7)
        if len(fields) > 6 and fields[5] == "2" and fields[6].isdigit():
            count += not int(fields[6]) & (MAINT_BITS | DRAIN_BITS)
    return count


def missing(view: HAProxyView, expected: dict[str, set[Address]]) -> int:
    """How many servers differ between what HAProxy serves and `expected` (0 = in step)."""
    serving = view.serving()
    diff = 0
    for backend, addresses in expected.items():
        diff += len(addresses ^ serving.get(backend, set()))
    return diff
