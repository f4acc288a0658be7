"""asyncio client for HAProxy's unix sockets: the runtime API (admin socket) and the master CLI.

One command per connection. Measured on HAProxy 2.6 (tests/synapse_haproxy): a
command on its own connection takes ~0.09 ms, a `;`-pipelined batch ~0.004 ms
per command; but in a pipelined batch the answers are not delimited (an error
message may or may not be followed by a blank line), so a failure could not be
tied to its command. 1000 operations cost ~90 ms one by one, which is far below
anything that matters here, so correctness wins.

The master CLI keeps the connection open after a command: we shut our write
side so it answers and closes. HAProxy 2.6 answers nothing to `reload`; a new
worker in `show proc` is the confirmation.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from dataclasses import dataclass, field

from synapse.haproxy.planner import Op
from synapse.haproxy.state import RunningServer

DEFAULT_TIMEOUT = 5.0
MAX_ANSWER_BYTES = 64 * 1024 * 1024  # `show servers state` of a very large edge is a few MB
# `show servers state` format 1; used when the header line is missing.
SERVER_STATE_COLUMNS = (
    "be_id", "be_name", "srv_id", "srv_name", "srv_addr", "srv_op_state", "srv_admin_state",
    "srv_uweight", "srv_iweight", "srv_time_since_last_change", "srv_check_status",
    "srv_check_result", "srv_check_health", "srv_check_state", "srv_agent_state",
    "bk_f_forced_id", "srv_f_forced_id", "srv_fqdn", "srv_port", "srvrecord", "srv_use_ssl",
    "srv_check_port", "srv_check_addr", "srv_agent_addr", "srv_agent_port",
)  # fmt: skip


class HAProxySocketError(Exception):
    """Base of the errors talking to an HAProxy socket."""


class SocketUnavailable(HAProxySocketError):
    """Could not connect, or no answer in time: HAProxy is down, reloading, or the path is wrong."""


class CommandFailed(HAProxySocketError):
    """HAProxy answered a command with an error."""

    def __init__(self, command: str, answer: str) -> None:
        super().__init__(f"{command!r} failed: {answer.strip()[:300] or '(empty answer)'}")
        self.command = command
        self.answer = answer


class UnexpectedAnswer(HAProxySocketError):
    """An answer we cannot parse (another HAProxy version, or not HAProxy at all)."""


async def unix_request(
    path: str, command: str, timeout: float = DEFAULT_TIMEOUT, shut_write: bool = False
) -> str:
    """Send one command line to a unix socket and read the answer until HAProxy closes."""
    if "\n" in command or "\r" in command:
        raise ValueError(f"a command must be one line: {command!r}")
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_unix_connection(path, limit=MAX_ANSWER_BYTES)
            try:
                writer.write(command.encode() + b"\n")
                if shut_write:
                    writer.write_eof()
                await writer.drain()
                data = await reader.read(MAX_ANSWER_BYTES)
                while chunk := await reader.read(MAX_ANSWER_BYTES):
                    data += chunk
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
    except TimeoutError as err:
        raise SocketUnavailable(f"{path}: no answer to {command!r} within {timeout}s") from err
    except OSError as err:
        raise SocketUnavailable(f"{path}: {err.strerror or err}") from err
    return data.decode(errors="replace")


# --------------------------------------------------------------------------- parsers


def parse_show_info(text: str) -> dict[str, str]:
    info = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            info[key.strip()] = value.strip()
    return info


def parse_version(version: str) -> tuple[int, int, int]:
    match = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", version)
    if match is None:
        raise UnexpectedAnswer(f"cannot read an HAProxy version from {version!r}")
    major, minor, patch = match.groups()
    return int(major), int(minor), int(patch or 0)


def parse_show_backend(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def parse_servers_state(text: str) -> list[RunningServer]:
    """Rows of `show servers state` (format 1); columns by the header when there is one."""
    lines = text.splitlines()
    if not lines or lines[0].strip() != "1":
        raise UnexpectedAnswer(f"not a format-1 servers state dump: {text[:120]!r}")
    columns = list(SERVER_STATE_COLUMNS)
    servers = []
    for line in lines[1:]:
        if line.startswith("#"):
            columns = line.lstrip("#").split()
            continue
        fields = line.split()
        if not fields:
            continue
        row = dict(zip(columns, fields, strict=False))
        try:
            servers.append(
                RunningServer(
                    backend=row["be_name"],
                    name=row["srv_name"],
                    id=int(row["srv_id"]),
                    addr=row["srv_addr"],
                    port=int(row.get("srv_port", "0")),
                    op_state=int(row["srv_op_state"]),
                    admin_state=int(row["srv_admin_state"]),
                    weight=int(row["srv_uweight"]),
                    initial_weight=int(row["srv_iweight"]),
                )
            )
        except (KeyError, ValueError) as err:
            raise UnexpectedAnswer(f"bad servers state line {line[:120]!r}: {err}") from err
    return servers


@dataclass(frozen=True)
class ProcInfo:
    """The master's `show proc`."""

    master_pid: int | None = None
    reloads: int = 0
    failed_reloads: int = 0
    workers: tuple[int, ...] = ()
    old_workers: tuple[int, ...] = ()
    versions: dict[int, str] = field(default_factory=dict)


def parse_show_proc(text: str) -> ProcInfo:
    section = "master"
    master: int | None = None
    reloads = failed = 0
    groups: dict[str, list[int]] = {"workers": [], "old_workers": []}
    versions: dict[int, str] = {}
    for line in text.splitlines():
        if line.startswith("# "):
            section = line[2:].strip().replace(" ", "_")
            continue
        fields = line.split()
        if not fields or not fields[0].isdigit():
            continue
        pid = int(fields[0])
        versions[pid] = fields[-1]
        if section == "master" and len(fields) > 2 and fields[1] == "master":
            master = pid
            reloads = int(fields[2]) if fields[2].isdigit() else 0
            match = re.search(r"\[failed:\s*(\d+)\]", line)
            failed = int(match.group(1)) if match else 0
        elif section in groups:
            groups[section].append(pid)
    return ProcInfo(
        master, reloads, failed, tuple(groups["workers"]), tuple(groups["old_workers"]), versions
    )


# --------------------------------------------------------------------------- clients


class RuntimeClient:
    """The runtime API on one admin socket (`stats socket ... level admin`)."""

    def __init__(self, path: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.path = path
        self.timeout = timeout

    async def execute(self, command: str) -> str:
        return await unix_request(self.path, command, self.timeout)

    async def run(self, op: Op) -> str:
        """Run one planned operation; CommandFailed unless HAProxy reports success."""
        answer = await self.execute(op.command)
        if not op.succeeded(answer):
            raise CommandFailed(op.command, answer)
        return answer

    async def info(self) -> dict[str, str]:
        info = parse_show_info(await self.execute("show info"))
        if "Pid" not in info:
            raise UnexpectedAnswer(f"{self.path}: `show info` has no Pid")
        return info

    async def version(self) -> tuple[int, int, int]:
        return parse_version((await self.info()).get("Version", ""))

    async def backends(self) -> list[str]:
        return parse_show_backend(await self.execute("show backend"))

    async def servers_state(self) -> list[RunningServer]:
        return parse_servers_state(await self.execute("show servers state"))

    async def dump_servers_state(self) -> str:
        """The raw dump, as HAProxy's `server-state-file` wants it."""
        text = await self.execute("show servers state")
        parse_servers_state(text)  # refuse to store an error message as a state file
        return text

    async def running_backends(self) -> dict[str, dict[str, RunningServer]]:
        """backend -> server name -> state, including backends without servers."""
        result: dict[str, dict[str, RunningServer]] = {b: {} for b in await self.backends()}
        for server in await self.servers_state():
            result.setdefault(server.backend, {})[server.name] = server
        return result


class MasterClient:
    """The master CLI of a master-worker HAProxy (`-S <path>`)."""

    def __init__(self, path: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.path = path
        self.timeout = timeout

    async def execute(self, command: str) -> str:
        return await unix_request(self.path, command, self.timeout, shut_write=True)

    async def show_proc(self) -> ProcInfo:
        info = parse_show_proc(await self.execute("show proc"))
        if info.master_pid is None:
            raise UnexpectedAnswer(f"{self.path}: `show proc` names no master")
        return info

    async def reload(self) -> str:
        return await self.execute("reload")
