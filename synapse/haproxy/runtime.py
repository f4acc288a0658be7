"""asyncio client for HAProxy's unix sockets: the runtime API (admin socket) and the master CLI.

Commands go in batches: one connection in interactive mode (``prompt``), every command
of a batch written at once, and each answer read up to the prompt that follows it. In
that mode HAProxy 2.6 ends every answer with "\n> ", so answers split reliably and a
failed command is attributed to itself. The plain `;`-separated form does not: there an
answer is followed by one newline, but some answers (`del server`'s "No such server.")
have no newline of their own, so two answers run together. Measured on 2.6.12: one
command per connection ~0.09 ms; a batch ~0.005 ms per command after ~0.1 ms to connect.
(Answers never contain "\n> " for the commands synapse sends: server and backend names
cannot hold '>', and state dumps and error messages do not start a line with it.)

The master CLI keeps the connection open after a command: we shut our write side so it
answers and closes. HAProxy 2.6 answers nothing to `reload`; a new worker in `show proc`
is the confirmation.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from synapse.haproxy.ops import Op
from synapse.haproxy.running import RunningServer

DEFAULT_TIMEOUT = 5.0
MAX_ANSWER_BYTES = 64 * 1024 * 1024  # `show servers state` of a very large edge is a few MB
SKIPPED = "not sent: an earlier command for this server failed"
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


PROMPT = b"\n> "  # what follows every answer in interactive mode


def split_answers(
    buffer: bytes | bytearray, limit: int, scan_from: int = 0
) -> tuple[list[str], int]:
    """The complete answers at the head of an interactive-mode transcript, at most ``limit``.

    Each answer ends where a prompt starts. Returns the answers and how many bytes they
    took (with their prompts); the rest is an answer still arriving. ``scan_from``: no
    prompt starts before this offset (it was searched already).
    """
    answers: list[str] = []
    start = 0
    while len(answers) < limit:
        end = buffer.find(PROMPT, max(start, scan_from))
        if end < 0:
            break
        answers.append(bytes(buffer[start:end]).decode(errors="replace"))
        start = end + len(PROMPT)
    return answers, start


async def _open(path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    try:
        return await asyncio.open_unix_connection(path, limit=MAX_ANSWER_BYTES)
    except OSError as err:
        raise SocketUnavailable(f"{path}: {err.strerror or err}") from err


class Session:
    """One admin-socket connection in interactive mode; ``ask`` sends a batch of commands.

    Use as ``async with Session(path, timeout) as session``; each ``ask`` is bounded by the
    timeout. A batch cut short (HAProxy gone, timeout) returns the answers that came.
    """

    def __init__(self, path: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.path = path
        self.timeout = timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._buffer = bytearray()
        self.closed = False

    async def __aenter__(self) -> Session:
        self._reader, self._writer = await _open(self.path)
        answers = await self.ask(["prompt"])
        if answers != [""]:
            await self.close()
            if not answers:
                raise SocketUnavailable(f"{self.path}: no answer to 'prompt'")
            raise UnexpectedAnswer(f"{self.path}: 'prompt' answered {answers[0][:120]!r}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        self.closed = True
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def ask(self, commands: Sequence[str]) -> list[str]:
        """Send ``commands`` at once; their answers in order (fewer if the batch was cut)."""
        if not commands:
            return []
        if self._reader is None or self._writer is None or self.closed:
            raise SocketUnavailable(f"{self.path}: the session is closed")
        for command in commands:
            if "\n" in command or "\r" in command:
                raise ValueError(f"a command must be one line: {command!r}")
        answers: list[str] = []
        scan = 0
        try:
            async with asyncio.timeout(self.timeout):
                self._writer.write("".join(f"{c}\n" for c in commands).encode())
                while True:
                    found, used = split_answers(self._buffer, len(commands) - len(answers), scan)
                    del self._buffer[:used]
                    answers += found
                    if len(answers) == len(commands):
                        break
                    scan = max(0, len(self._buffer) - len(PROMPT) + 1)
                    chunk = await self._reader.read(MAX_ANSWER_BYTES)
                    if not chunk:
                        break
                    self._buffer += chunk
        except (TimeoutError, OSError):
            pass  # the caller sees the missing answers
        if len(answers) < len(commands):
            # Late answers would be taken for the next batch's: never use it again.
            await self.close()
        return answers


async def unix_request(
    path: str, command: str, timeout: float = DEFAULT_TIMEOUT, shut_write: bool = False
) -> str:
    """Send one command line to a unix socket and read the answer until HAProxy closes."""
    if "\n" in command or "\r" in command:
        raise ValueError(f"a command must be one line: {command!r}")
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await _open(path)
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
    except OSError as err:  # the connection broke after it was opened
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


# The columns RunningServer takes, as text and as integers.
_TEXT_COLUMNS = ("be_name", "srv_name", "srv_addr")
_INT_COLUMNS = ("srv_id", "srv_port", "srv_op_state", "srv_admin_state", "srv_uweight",
                "srv_iweight")  # fmt: skip
CANNOT_FIND_BACKEND = "Can't find backend"
_PID = re.compile(r"^Pid: (\d+)$", re.MULTILINE)


def _column_indexes(columns: list[str]) -> tuple[list[int], list[int]]:
    try:
        return [columns.index(c) for c in _TEXT_COLUMNS], [columns.index(c) for c in _INT_COLUMNS]
    except ValueError as err:
        raise UnexpectedAnswer(f"servers state columns without {err}") from err


def parse_servers_state(text: str) -> list[RunningServer]:
    """Rows of `show servers state` (format 1); columns by the header when there is one."""
    lines = text.splitlines()
    if not lines or lines[0].strip() != "1":
        raise UnexpectedAnswer(f"not a format-1 servers state dump: {text[:120]!r}")
    texts, ints = _column_indexes(list(SERVER_STATE_COLUMNS))
    servers = []
    for line in lines[1:]:
        if line.startswith("#"):
            texts, ints = _column_indexes(line.lstrip("#").split())
            continue
        fields = line.split()
        if not fields:
            continue
        try:
            backend, name, addr = (fields[i] for i in texts)
            sid, port, op_state, admin, weight, initial = (int(fields[i]) for i in ints)
        except (IndexError, ValueError) as err:
            raise UnexpectedAnswer(f"bad servers state line {line[:120]!r}: {err}") from err
        servers.append(
            RunningServer(backend, name, sid, addr, port, op_state, admin, weight, initial)
        )
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


def _waves(ops: Sequence[Op]) -> list[list[int]]:
    """Indexes of ``ops`` by rank within their server: all first ops, all second ops..."""
    rank: dict[str, int] = {}
    waves: list[list[int]] = []
    for index, op in enumerate(ops):
        wave = rank.get(op.target, 0)
        rank[op.target] = wave + 1
        if wave == len(waves):
            waves.append([])
        waves[wave].append(index)
    return waves


class RuntimeClient:
    """The runtime API on one admin socket (`stats socket ... level admin`)."""

    def __init__(self, path: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.path = path
        self.timeout = timeout
        self._holding = 0
        self._held: Session | None = None
        self.connections = 0  # opened so far: for tests

    async def execute(self, command: str) -> str:
        return await unix_request(self.path, command, self.timeout)

    @contextlib.asynccontextmanager
    async def held(self) -> AsyncIterator[None]:
        """Batches sent inside share one connection (one apply: read, commands, read)."""
        self._holding += 1
        try:
            yield
        finally:
            self._holding -= 1
            if not self._holding:
                await self.release()

    async def release(self) -> None:
        """Close the held connection: after a reload the next batch must reach the new
        process, not the old one still serving this connection."""
        session, self._held = self._held, None
        if session is not None:
            await session.close()

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[Session]:
        if not self._holding:
            self.connections += 1
            async with Session(self.path, self.timeout) as session:
                yield session
            return
        if self._held is None or self._held.closed:
            self.connections += 1
            self._held = await Session(self.path, self.timeout).__aenter__()
        try:
            yield self._held
        except BaseException:
            await self.release()
            raise

    async def run(self, op: Op) -> str:
        """Run one planned operation; CommandFailed unless HAProxy reports success."""
        answer = await self.execute(op.command)
        if not op.succeeded(answer):
            raise CommandFailed(op.command, answer)
        return answer

    async def run_ops(self, ops: Sequence[Op]) -> list[str | None]:
        """Run operations on one connection: per op, None when it worked, else why not.

        The ops of one server run in their order, and after one of them fails the later
        ones are not sent (a server whose `add server` failed must not be made ready).
        So the batch goes in waves: every server's first op, then every second op...
        """
        lost = f"{self.path}: no answer (connection lost or timed out)"
        results: list[str | None] = [lost] * len(ops)
        failed: set[str] = set()
        async with self.session() as session:
            for wave in _waves(ops):
                batch = []
                for i in wave:
                    if ops[i].target in failed:
                        results[i] = SKIPPED
                    else:
                        batch.append(i)
                answers = await session.ask([ops[i].command for i in batch])
                for i, answer in zip(batch, answers, strict=False):
                    if ops[i].succeeded(answer):
                        results[i] = None
                    else:
                        results[i] = str(CommandFailed(ops[i].command, answer))
                        failed.add(ops[i].target)
                if len(answers) < len(batch):
                    break  # the rest keep `lost`
        return results

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
        _, backends = await self.read_state(None)
        return {name: servers or {} for name, servers in backends.items()}

    async def backend_names(self) -> tuple[str, list[str]]:
        """HAProxy's pid and its backends (`show info`, `show backend`, one connection)."""
        async with self.session() as session:
            answers = await session.ask(["show info", "show backend"])
        if len(answers) < 2:
            raise SocketUnavailable(f"{self.path}: no answer to 'show backend'")
        return _pid(self.path, answers[0]), parse_show_backend(answers[1])

    async def read_state(
        self, backends: Sequence[str] | None, with_pid: bool = True
    ) -> tuple[str | None, dict[str, dict[str, RunningServer] | None]]:
        """On one connection: HAProxy's pid (`show info`; None without ``with_pid``), and
        the servers of ``backends`` (None: of every backend; one HAProxy lacks: None).

        The whole state of a large HAProxy takes tens of milliseconds to parse: that is
        done in a thread, so the event loop keeps serving meanwhile.
        """
        commands = ["show info"] if with_pid else []
        if backends is None:
            commands += ["show backend", "show servers state"]
        else:
            commands += [f"show servers state {b}" for b in backends]
        async with self.session() as session:
            answers = await session.ask(commands)
        if len(answers) < len(commands):
            raise SocketUnavailable(f"{self.path}: no answer to {commands[len(answers)]!r}")
        pid = _pid(self.path, answers.pop(0)) if with_pid else None
        if backends is None:
            return pid, await asyncio.to_thread(_all_backends, answers[0], answers[1])
        result: dict[str, dict[str, RunningServer] | None] = {}
        for backend, answer in zip(backends, answers, strict=True):
            if answer.startswith(CANNOT_FIND_BACKEND):
                result[backend] = None
                continue
            found = {s.name: s for s in parse_servers_state(answer)}
            if any(s.backend != backend for s in found.values()):
                raise UnexpectedAnswer(f"'show servers state {backend}' named another backend")
            result[backend] = found
        return pid, result


def _pid(path: str, info: str) -> str:
    found = _PID.search(info)
    if found is None:
        raise UnexpectedAnswer(f"{path}: `show info` has no Pid: {info[:120]!r}")
    return found.group(1)


def _all_backends(show_backend: str, state: str) -> dict[str, dict[str, RunningServer] | None]:
    result: dict[str, dict[str, RunningServer] | None] = {
        name: {} for name in parse_show_backend(show_backend)
    }
    for server in parse_servers_state(state):
        servers = result.setdefault(server.backend, {})
        assert servers is not None
        servers[server.name] = server
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
