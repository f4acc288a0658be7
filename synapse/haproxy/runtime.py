"""asyncio clients of HAProxy: the runtime API (admin socket) and the master CLI.

The transport (batches on one prompt-mode connection) is ``synapse.haproxy.sockets``,
the parsing of answers ``synapse.haproxy.answers``. The master CLI keeps the connection
open after a command: we shut our write side so it answers and closes. HAProxy 2.6
answers nothing to `reload`; a new worker in `show proc` is the confirmation.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence

from synapse.haproxy.answers import (
    CANNOT_FIND_BACKEND,
    ProcInfo,
    check_servers_state,
    is_stopping,
    parse_all_backends,
    parse_labels_of,
    parse_pid,
    parse_servers_state,
    parse_show_backend,
    parse_show_info,
    parse_show_proc,
    parse_state_labels,
    parse_version,
)
from synapse.haproxy.ops import DelServer, Op, SetState, SetWeight
from synapse.haproxy.running import RunningServer
from synapse.haproxy.sockets import (
    DEFAULT_TIMEOUT,
    CommandFailed,
    NoAnswer,
    Session,
    SocketUnavailable,
    Unanswered,
    UnexpectedAnswer,
    unix_request,
)

SKIPPED = "not sent: an earlier command for this server failed"
# A kept connection (the controller's between applies, the settle reads', the state
# dumper's between rounds) stays open this long: under HAProxy's default `stats timeout`
# (10 s), after which HAProxy closes it. After synapse's own reload all are released.
KEEP_IDLE_S = 5.0
STOPPING_ASKS = 5  # reads a stopping process answered are asked again: 0, 10, 20, 30 ms on
STOPPING_PAUSE = 0.01


def _waves(ops: Sequence[Op]) -> list[list[int]]:
    """Indexes of ``ops`` by rank within their server: all first ops, all second ops...,
    each wave in the order listed; and an op that takes its server out of the balancing
    (``_takes_away``) goes no earlier than the other ops listed before it for its backend:
    in the same wave after them, or later. The planner lists those last (capacity comes
    before it goes): the old servers of a swap go into maint after the new ones' `state
    ready`, in the same batch, and a lone removal still goes in the first wave. (HAProxy
    runs a batch's commands in order, each done before the next is read.)

    Two exchanges a server could seem to save, measured on HAProxy 2.6 and not taken: a
    `del server` sent with its `state maint` is refused while the server's idle backend
    connections remain (HAProxy purges them just after the maint; a wave later it deletes);
    `add server ... enabled` in place of the add and its `state ready` shows the server
    running in `show servers state`, but HAProxy never sends it traffic."""
    rank: dict[str, int] = {}
    last: dict[str, int] = {}  # backend -> the latest wave of its other ops so far
    waves: list[list[int]] = []
    for index, op in enumerate(ops):
        wave = rank.get(op.target, 0)
        if _takes_away(op):
            wave = max(wave, last.get(op.backend, 0))
        else:
            last[op.backend] = max(last.get(op.backend, 0), wave)
        rank[op.target] = wave + 1
        while wave >= len(waves):
            waves.append([])
        waves[wave].append(index)
    return waves


def _takes_away(op: Op) -> bool:
    """Whether ``op`` takes its server out of the balancing: maint, drain, del, weight 0."""
    if isinstance(op, SetState):
        return op.state != "ready"
    return isinstance(op, DelServer) or (isinstance(op, SetWeight) and op.weight == 0)


class RuntimeClient:
    """The runtime API on one admin socket (`stats socket ... level admin`).

    ``keep_idle``: a held connection stays open that many seconds after its last use, so
    the next apply does not connect again (on a change's path: a connect and a round trip
    less). HAProxy closes an idle CLI connection after its `stats timeout` (10 s by
    default); a connection kept that long is replaced, and the first read on a kept one
    is sent again on a fresh one when it gets no answer, or an answer from a stopping
    process (an old worker after an outside reload still serves the connections it had).
    """

    def __init__(self, path: str, timeout: float = DEFAULT_TIMEOUT, keep_idle: float = 0.0) -> None:
        self.path = path
        self.timeout = timeout
        self.keep_idle = keep_idle
        self._holding = 0
        self._held: Session | None = None
        self._idle_since = 0.0
        self._unverified = False  # the held connection was kept idle: not yet answered again
        self._idle_close: asyncio.TimerHandle | None = None
        self._closing: set[asyncio.Task[None]] = set()
        self.connections = 0  # opened so far: for tests
        # (time.monotonic) HAProxy's last answer here, and the last wait for one that ended
        # at the timeout: before a reload synapse asks whether HAProxy is stalled
        # (``SlowSocket.stalled``) unless it answered since this apply began, after any
        # such wait (a `show map` of the edge's routes unanswered after the apply's read)
        self.answered_at = 0.0
        self.unanswered: Unanswered | None = None
        self.unanswered_at = 0.0

    async def execute(self, command: str) -> str:
        try:
            answer = await unix_request(self.path, command, self.timeout)
        except NoAnswer as err:
            self._no_answer(str(err))
            raise
        self.answered_at = time.monotonic()
        return answer

    def _no_answer(self, error: str) -> None:
        self.unanswered, self.unanswered_at = Unanswered(error), time.monotonic()

    def _ended(self, session: Session) -> None:
        self.answered_at = max(self.answered_at, session.answered_at)
        if session.timed_out:  # (a batch, or its `prompt`, met the timeout's silence)
            self._no_answer(f"{self.path}: no answer (timed out)")

    @contextlib.asynccontextmanager
    async def held(self) -> AsyncIterator[None]:
        """Batches sent inside share one connection (one apply: read, commands, read)."""
        self._keep_open()
        if not self._holding and self._held is not None:
            if time.monotonic() - self._idle_since > self.keep_idle:
                await self.release()
            else:
                self._unverified = True
        self._holding += 1
        try:
            yield
        finally:
            self._holding -= 1
            if not self._holding:
                if self.keep_idle and self._held is not None and not self._held.closed:
                    self._idle_since = time.monotonic()
                    loop = asyncio.get_running_loop()
                    self._idle_close = loop.call_later(self.keep_idle, self._close_idle)
                else:
                    await self.release()

    def _keep_open(self) -> None:
        if self._idle_close is not None:
            self._idle_close.cancel()
            self._idle_close = None

    def _close_idle(self) -> None:
        """``keep_idle`` over: synapse closes the kept connection itself, before HAProxy's
        `stats timeout` does. HAProxy 2.6 at times only half-closed one at its timeout and
        kept the session, with no timer, until synapse's next use closed it: one of the
        10 connections (`stats maxconn`) the operator's socket serves, held for good."""
        self._idle_close = None
        if self._holding:
            return
        session, self._held = self._held, None  # (now: a batch may start before the close)
        self._unverified = False
        if session is not None:
            task = asyncio.ensure_future(session.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def release(self) -> None:
        """Close the held connection: after a reload the next batch must reach the new
        process, not the old one still serving this connection."""
        self._keep_open()
        session, self._held = self._held, None
        self._unverified = False
        if session is not None:
            await session.close()

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[Session]:
        if not self._holding:
            self.connections += 1
            async with Session(self.path, self.timeout) as session:
                try:
                    yield session
                finally:
                    self._ended(session)
            return
        if self._held is None or self._held.closed:
            self.connections += 1
            self._held = await Session(self.path, self.timeout).__aenter__()
        held = self._held
        try:
            yield held
        except BaseException:
            await self.release()
            raise
        finally:
            self._ended(held)

    async def ask(self, commands: Sequence[str]) -> list[str]:
        """A batch on one connection (the held one, if any): answers in order, fewer when
        the batch was cut short."""
        async with self.session() as session:
            return await session.ask(commands)

    async def ask_kept(self, commands: Sequence[str]) -> list[str]:
        """A batch that starts with `show info`, on the connection kept from the last one
        (``keep_idle``), or on a fresh one when that one is dead or held by a stopping
        process (``_ask_reads``): a caller asking every second (the state dumper, idle)
        connects once, not every time."""
        if not commands or commands[0] != "show info":
            raise ValueError("a batch on a kept connection starts with 'show info'")
        async with self.held():
            return await self._ask_reads(commands)

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
        So the batch goes in waves: every server's first op, then every second op...;
        an op taking a server out of the balancing after the ops listed before it for
        its backend (``_waves``). When an op adding capacity to a backend failed or was
        not sent (a new server's `add server` refused), the ops that would take capacity
        away from it are not sent either: the old servers serve until what follows a
        failure (a read, a new plan, a reload) settles the backend.
        """
        if not ops:
            return []
        lost = Unanswered(f"{self.path}: no answer (connection lost or timed out)")
        results: list[str | None] = [lost] * len(ops)
        failed: set[str] = set()
        short: set[str] = set()  # backends whose new capacity did not come: none taken away
        kept, self._unverified = self._unverified, False
        async with self.session() as session:
            for wave in _waves(ops):
                batch = []
                for i in wave:
                    op = ops[i]
                    if op.target in failed or (op.backend in short and _takes_away(op)):
                        results[i] = SKIPPED  # (the re-plan or reload that follows settles it)
                        if not _takes_away(op):
                            short.add(op.backend)
                    else:
                        batch.append(i)
                commands = [ops[i].command for i in batch]
                if kept:  # the apply read nothing first: this batch checks the connection
                    kept = False
                    session, answers = await self._checked_ask(session, commands)
                else:
                    answers = await session.ask(commands)
                for i, answer in zip(batch, answers, strict=False):
                    if ops[i].succeeded(answer):
                        results[i] = None
                    else:
                        results[i] = str(CommandFailed(ops[i].command, answer))
                        failed.add(ops[i].target)
                        if not _takes_away(ops[i]):
                            short.add(ops[i].backend)
                if len(answers) < len(batch):
                    break  # the rest keep `lost`
        return results

    async def _checked_ask(
        self, session: Session, commands: Sequence[str]
    ) -> tuple[Session, list[str]]:
        """The first batch on a connection kept idle, with `show info` ahead: a dead
        connection (no answer), or one held by an old, stopping worker (an outside reload:
        its commands reach nobody who stays), has the batch sent again on a fresh one.
        (The read after the apply then finds the new process and reads it whole.)"""
        answers = await session.ask(["show info", *commands])
        stopping = bool(answers) and is_stopping(answers[0])
        if (answers or session.timed_out) and not stopping:
            # (timed out: a stalled HAProxy reads the batch later and runs it; sent again,
            # every command ran twice: "custom id already used", a needless reload)
            return session, answers[1:]
        await self.release()
        async with self.session() as fresh:
            return fresh, await fresh.ask(commands)

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
        # Refuse to store an error message as a state file; parsing 20,000 rows every
        # second (StateDumper) took ~15 % of a loaded synapse's loop (py-spy).
        check_servers_state(text)
        return text

    async def running_backends(self) -> dict[str, dict[str, RunningServer]]:
        """backend -> server name -> state, including backends without servers."""
        _, backends = await self.read_state(None)
        return {name: servers or {} for name, servers in backends.items()}

    async def backend_names(self) -> tuple[str, list[str]]:
        """HAProxy's pid and its backends (`show info`, `show backend`, one connection)."""
        answers = await self._ask_reads(["show info", "show backend"])  # (not a stopping one's)
        if len(answers) < 2:
            raise SocketUnavailable(f"{self.path}: no answer to 'show backend'")
        return parse_pid(self.path, answers[0]), parse_show_backend(answers[1])

    async def read_state(
        self,
        backends: Sequence[str] | None,
        with_pid: bool = True,
        step: int = 0,
        known: Mapping[str, Mapping[str, RunningServer]] | None = None,
        pause: Callable[[], Awaitable[None]] | None = None,
    ) -> tuple[str | None, dict[str, dict[str, RunningServer] | None]]:
        """On one connection: HAProxy's pid (`show info`; None without ``with_pid``), and
        the servers of ``backends`` (None: of every backend; one HAProxy lacks: None).
        ``known``: backend -> servers believed (the view's): rows equal to them give the
        same objects (``parse_servers_state``).

        The whole state of a large HAProxy takes tens of milliseconds to parse: that is
        done in a thread, so the event loop keeps serving meanwhile. ``step``: the answers
        of ``backends`` are parsed that many per turn of the loop (one round trip still),
        and ``pause`` is awaited between those turns (a background read: a change first).
        """
        commands = ["show info"] if with_pid else []
        if backends is None:
            commands += ["show backend", "show servers state"]
        else:
            commands += [f"show servers state {b}" for b in backends]
        answers = await self._ask_every(commands)
        pid = parse_pid(self.path, answers.pop(0)) if with_pid else None
        if backends is None:
            return pid, await asyncio.to_thread(parse_all_backends, answers[0], answers[1])
        result: dict[str, dict[str, RunningServer] | None] = {}
        for i, (backend, answer) in enumerate(zip(backends, answers, strict=True)):
            if step and i and not i % step:
                await asyncio.sleep(0)  # (a change's steps run between the parsing)
            if pause is not None and not (step and i % step):
                await pause()  # (also before the first step: the answers came meanwhile)
            if answer.startswith(CANNOT_FIND_BACKEND):
                result[backend] = None
                continue
            had = known.get(backend) if known is not None else None
            found = {s.name: s for s in parse_servers_state(answer, had)}
            if any(s.backend != backend for s in found.values()):
                raise UnexpectedAnswer(f"'show servers state {backend}' named another backend")
            result[backend] = found
        return pid, result

    async def read_labels(
        self, backends: Sequence[str], whole: bool = False
    ) -> dict[str, dict[str, str] | None]:
        """{backend: {server: state label}} on one connection (None: HAProxy lacks it): a
        look's read (synapse.haproxy.looks), none of ``read_state``'s RunningServers.
        ``whole``: from one `show servers state` of every backend (and `show backend`), not
        one command per backend: HAProxy answers, and synapse reads, 2 answers, not N."""
        if whole:
            answers = await self._ask_every(["show backend", "show servers state"])
            return parse_labels_of(answers[0], answers[1], backends)
        answers = await self._ask_every([f"show servers state {b}" for b in backends])
        return {
            backend: None
            if answer.startswith(CANNOT_FIND_BACKEND)
            else parse_state_labels(answer, backend)
            for backend, answer in zip(backends, answers, strict=True)
        }

    async def _ask_every(self, commands: Sequence[str]) -> list[str]:
        """``_ask_reads``; SocketUnavailable unless every command was answered."""
        answers = await self._ask_reads(commands)
        if len(answers) < len(commands):
            raise SocketUnavailable(f"{self.path}: no answer to {commands[len(answers)]!r}")
        return answers

    async def _ask_reads(self, commands: Sequence[str]) -> list[str]:
        """Read-only commands on the held connection; on a fresh one when a kept connection
        turns out dead (no answer), or when a stopping process answered (reads are safe to
        repeat): kept from before a reload, or a fresh one the old worker accepted on the
        listener it shares with the new one for a moment (a few tries, a moment apart)."""
        kept, self._unverified = self._unverified, False
        for attempt in range(STOPPING_ASKS):
            if attempt:
                await self.release()
                await asyncio.sleep(STOPPING_PAUSE * (attempt - 1))  # (at once after a kept one)
            async with self.session() as session:
                answers = await session.ask(commands)
            stale = bool(answers) and commands[0] == "show info" and is_stopping(answers[0])
            if not stale and (answers or not kept):
                break
            kept = False
        return answers


def kept_clients(paths: Sequence[str]) -> list[RuntimeClient]:
    """The controller's clients: their connection is kept between applies."""
    return [RuntimeClient(path, keep_idle=KEEP_IDLE_S) for path in paths]


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
