"""Keeps HAProxy's server-state file fresh, so a crashed HAProxy restarts with today's states.

The installer dumps `show servers state` before each reload; between reloads states change
(HAProxy's checks, runtime operations), and a HAProxy that dies is started again from
that file. Every DUMP_INTERVAL a round reads part of it again and writes the file
(atomically) only when a state changed: the column that counts seconds since the last
change is left out of the comparison, so a quiet fleet costs one batch of socket
commands per interval and no disk write.

A round reads only some backends (``synapse.haproxy.stateblocks``): those synapse's
runtime commands changed since the last round (``touched``) and the next 1/ROTATION of
all of them in turn, so what HAProxy's checks or an operator changed is in the file
within ROTATION rounds. Every backend is read only at the start, after a reload and when
the file is not the one this dumper wrote, and then WHOLE_BATCH backends at a time
(`show servers state <backend>`): the whole dump in one answer (1.9 MB at 1,000 backends
of 20 servers) kept HAProxy busy for ~60 ms and synapse's loop for as long again, every
second, beside the changes.

The dump never holds up an apply (the controller's lock): it is compared a chunk at a
time while no apply runs (waiting at most MAX_PAUSE in all), and written to a temp file
outside the lock. Only the rename takes the lock, and only if nobody else wrote the file
since the round began: the installer writes a newer dump right before a reload, and an
older text must not replace it (that round is skipped; the next one reads it all). A
round may still miss an apply's runtime commands that ran after it read: the next round,
a second later, has them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Collection, Iterator
from pathlib import Path

from smartstack.logs import event
from synapse.atomic import discard, stage
from synapse.change_gate import ChangeGate
from synapse.haproxy.answers import parse_pid, parse_show_backend
from synapse.haproxy.managed import ManagedHAProxy
from synapse.haproxy.reader import RunningReader
from synapse.haproxy.runtime import KEEP_IDLE_S, RuntimeClient
from synapse.haproxy.settings import Settings
from synapse.haproxy.sockets import HAProxySocketError, SocketUnavailable, UnexpectedAnswer
from synapse.haproxy.stateblocks import (
    TAIL,
    Blocks,
    backend_rows,
    changed_blocks,
    comparable_rows,
    file_text,
    head_of,
    splice,
)

log = logging.getLogger("synapse.haproxy")
DUMP_INTERVAL = 1.0
MAX_PAUSE = 30.0  # a slow dump must not leave the state file stale for minutes
CPU_SHARE = 20  # pause = CPU_SHARE x the dump's own CPU time: at most ~5 % of a core
ROTATION = 10  # rounds in which every backend is read again (HAProxy's own changes: a
# server's check health restored from an older file is wrong until rise/fall checks pass)
WHOLE_BATCH = 6  # backends per step of a whole dump or a round (~120 rows at 20 servers
# each: 12 a step were ~3.5 ms of one loop turn)
CHUNK_GAP = 0.002  # seconds the loop is left alone after each step
MAX_DEFER = 10.0  # seconds a round waits at most for the after-start sweep (``deferred``)
DEFER_POLL = 0.05  # seconds between looks at whether that sweep has ended
FileId = tuple[int, int, int]  # inode, mtime, size


def comparable(dump: str) -> bytes:
    """A digest of a dump without what changes every second (an unchanged fleet compares
    equal)."""
    return hashlib.blake2b(comparable_rows(dump.splitlines()), digest_size=16).digest()


def next_pause(cpu_seconds: float) -> float:
    """Seconds until the next dump after one that cost ``cpu_seconds`` of CPU.

    Based on the dump's own CPU time, not the wall time around it: a hung socket or a busy
    thread pool costs no CPU, and with wall time one 10 s stall stretched the next gap to
    200 s, just when the state file matters. Capped at MAX_PAUSE all the same."""
    return min(MAX_PAUSE, max(DUMP_INTERVAL, CPU_SHARE * cpu_seconds))


class StateDumper:
    """Background task: ``show servers state`` into ``path`` whenever a state changed.

    ``runtime``: a client of its own (its connection kept from one round to the next)."""

    def __init__(self, runtime: RuntimeClient, path: Path, alive: Callable[[], bool]) -> None:
        self.runtime, self.path, self._alive = runtime, path, alive
        self._blocks: Blocks | None = None  # the file as last written; None: dump it whole
        self._touched: set[str] = set()  # backends runtime commands changed since the read
        # Touched and not yet in the file (a revive reads these at once): a round clears
        # what it covered only when it wrote them or found them unchanged.
        self.unsaved: set[str] = set()
        self._next = 0  # where in the backends the next round's share starts
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()  # the controller's, once started (a lone dumper: its own)
        self._deadline = 0.0  # past it, a dump stops waiting for applies to end
        self._cpu = 0.0  # thread CPU time of this round's steps so far
        self.writes = 0
        self.whole_dumps = 0
        self._failing: int | None = None  # rounds failed since the last write (None: none)
        self.change_gate = ChangeGate()  # the reader's (``state_dumper``): changes go first
        self._turn = self.change_gate.job()  # (a dump round's own: ``dump``)
        # The reader's after-start sweep still runs (``state_dumper``). A whole dump then
        # (the first round after a start or reload) was ~5 % of the loop beside the sweep's
        # steps, which changes already wait behind; the file before a reload is fresh
        # (the installer dumps it), so rounds and their steps wait until the sweep ends,
        # MAX_DEFER at most.
        self.deferred: Callable[[], bool] = lambda: False
        self._deferred_since: float | None = None

    def start(self, lock: asyncio.Lock | None = None) -> None:
        """``lock``: the controller's; a dump waits while an apply holds it."""
        if lock is not None:
            self._lock = lock
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.runtime.release()  # (the connection kept between rounds)

    def touched(self, backends: Collection[str]) -> None:
        """Runtime commands changed these backends: the next round reads them."""
        self._touched.update(backends)
        self.unsaved.update(backends)

    async def dump(self) -> float:
        """One round; HAProxy not answering is skipped (down or reloading: the supervisor
        and the installer deal with it). Returns the CPU seconds the round's steps took."""
        if not self._alive() or self._defer():
            return 0.0
        self._deadline = time.monotonic() + MAX_PAUSE
        self._cpu = 0.0
        self._turn = self.change_gate.job()  # (the round's steps: MAX_WAIT in all)
        await self._idle()
        seen = self._file_id()
        blocks = self._blocks
        writes = self.writes
        try:
            if blocks is None or blocks.file_id != seen:
                await self._dump_whole(seen)
            else:
                await self._dump_part(blocks, seen)
        except HAProxySocketError:
            self._blocks = None  # (an error message, a torn answer): read it whole next time
        except OSError as err:
            self._blocks = None
            self._failed(err)
        else:
            if self._failing is not None and self.writes > writes:
                event(log, "haproxy_state_dump_recovered", failed_rounds=self._failing)
                self._failing = None
        return self._cpu

    def _failed(self, err: OSError) -> None:
        """Logged once per streak (a full disk failed every round: a line a second); the
        round that writes the file again says so."""
        if self._failing is None:
            event(log, "haproxy_state_dump_failed", level=logging.WARNING, error=str(err))
        self._failing = (self._failing or 0) + 1

    def _defer(self) -> bool:
        """Whether this round waits for the after-start sweep (``deferred``)."""
        if not self.deferred():
            self._deferred_since = None
            return False
        now = time.monotonic()
        if self._deferred_since is None:
            self._deferred_since = now
        return now - self._deferred_since < MAX_DEFER

    async def _dump_whole(self, seen: FileId | None) -> None:
        """Every backend, WHOLE_BATCH at a time (`show servers state <backend>`): not the
        whole dump in one answer, which kept HAProxy busy for ~60 ms and took as long
        again to decode and check, at a start, while the changes began."""
        self._touched.clear()  # (in what is read now)
        covering = set(self.unsaved)
        pid, names = await self._names()
        self.whole_dumps += 1
        head, rows_of = "", {}
        blocks = Blocks(pid, "", TAIL, names)
        for start in range(0, len(names), WHOLE_BATCH):
            batch = names[start : start + WHOLE_BATCH]
            answers = await self._ask([f"show servers state {name}" for name in batch])
            began = time.thread_time()
            for name, answer in zip(batch, answers, strict=True):
                head = head or head_of(answer)
                rows = backend_rows(name, answer, head)
                if rows is None:  # reloaded meanwhile: the next round starts again
                    raise UnexpectedAnswer(f"HAProxy has no backend {name!r} any more")
                rows_of[name] = rows
                blocks.add(name, rows)
            cpu = time.thread_time() - began
            self._cpu += cpu
            await self._idle()
            await asyncio.sleep(CPU_SHARE * cpu)  # (~5 % of a core: the start's changes)
        if not names:  # (no backend: the header alone)
            head = head_of((await self._ask(["show servers state"]))[0])
        if (await self._names())[0] != pid:
            raise UnexpectedAnswer("HAProxy was reloaded during the dump")
        blocks.head = head
        # (1.9 MB of text at 20,000 servers: joined in the thread that writes it)
        blocks.file_id = await self._install(
            lambda: stage(self.path, file_text(blocks, rows_of)), seen
        )
        if blocks.file_id is not None:
            self._blocks = blocks
            self.unsaved -= covering
            self._cpu = 0.0  # (paced already, batch by batch: no pause after it)

    async def _names(self) -> tuple[str, list[str]]:
        """HAProxy's pid and its backends, in its order."""
        answers = await self._ask(["show info", "show backend"])
        return parse_pid(self.runtime.path, answers[0]), parse_show_backend(answers[1])

    async def _ask(self, commands: list[str], kept: bool = False) -> list[str]:
        """``kept``: on the connection kept from the last round (a round that reads all
        uses fresh ones: its last pid check must reach the process serving now)."""
        ask = self.runtime.ask_kept if kept else self.runtime.ask
        answers = await ask(commands)
        if len(answers) < len(commands):
            raise SocketUnavailable(f"{self.runtime.path}: no answer to {commands[len(answers)]!r}")
        return answers

    async def _dump_part(self, blocks: Blocks, seen: FileId | None) -> None:
        """The touched backends and this round's share of them all; spliced into the file
        when their rows changed."""
        share = math.ceil(len(blocks.order) / ROTATION)
        start = self._next % len(blocks.order) if blocks.order else 0
        self._next = start + share
        wanted = set(blocks.order[start : start + share]) | self._touched
        covering, self._touched = self._touched, set()
        if not wanted <= set(blocks.order):
            return await self._dump_whole(seen)  # (a backend new since: another process)
        names = sorted(wanted)
        commands = ["show info", *(f"show servers state {name}" for name in names)]
        answers = await self._ask(commands, kept=True)  # (each second: no connect each time)
        if parse_pid(self.runtime.path, answers[0]) != blocks.pid:
            return await self._dump_whole(seen)  # reloaded or restarted since
        fetched: dict[str, list[str]] = {}
        gone: list[str] = []
        await self._steps(_decoded(names, answers[1:], blocks.head, fetched, gone))
        if gone:
            return await self._dump_whole(seen)  # (another process after all)
        changed: dict[str, list[str]] = {}  # (of at most 1/ROTATION of the rows)
        await self._steps(changed_blocks(blocks, fetched, changed))
        if not changed:
            self.unsaved -= covering
            return None
        spliced: list[Blocks] = []

        def write() -> str:
            with open(self.path, encoding="utf-8") as handle:
                text, new = splice(blocks, handle.read(), changed)
            spliced.append(new)
            return stage(self.path, text)

        try:
            written = await self._install(write, seen)
        except ValueError:  # not the file this dumper wrote after all
            self._blocks = None
            return None
        if written is not None:
            self._blocks = spliced[0]
            self._blocks.file_id = written
            self.unsaved -= covering
        return None

    async def _steps(self, steps: Iterator[None]) -> None:
        """Run ``steps`` on the event loop, giving it a turn (``_idle``) between them."""
        began = time.thread_time()
        for _ in steps:
            self._cpu += time.thread_time() - began
            await self._idle()
            began = time.thread_time()
        self._cpu += time.thread_time() - began

    def _file_id(self) -> FileId | None:
        """Which write of the state file is there (inode, mtime, size): a rename changes it."""
        try:
            found = os.stat(self.path)
        except OSError:
            return None
        return found.st_ino, found.st_mtime_ns, found.st_size

    async def _install(self, staging: Callable[[], str], seen: FileId | None) -> FileId | None:
        """Replace the state file with what ``staging`` writes (in a thread: it returns the
        temp file's name) unless the file was written since the round began (``seen``:
        its identity then); the new file's identity, or None when not replaced. Only the
        rename is under the lock."""
        staged = await _staged(staging)
        try:
            async with self._lock:
                if self._file_id() != seen:
                    return None
                os.replace(staged, self.path)
                staged = ""
                written = self._file_id()
            self.writes += 1
            return written
        finally:
            if staged:
                discard(staged)

    async def _idle(self) -> None:
        """A gap for whatever comes (a registry event takes a few turns of the loop to
        reach the controller), then wait while an apply runs: a dump beside the first
        apply (which then read every server after HAProxy served) held up the change
        waiting for that apply."""
        await asyncio.sleep(CHUNK_GAP)
        while self._defer():  # (a round begun before the start's sweep: it waits there)
            await asyncio.sleep(DEFER_POLL)
        await self._turn()  # a change on its way first (``synapse.change_gate``)
        left = self._deadline - time.monotonic()
        if self._lock.locked() and left > 0:  # our turn in the lock's queue, given back at once
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left), self._lock:
                    pass

    async def _run(self) -> None:
        pause = DUMP_INTERVAL
        while True:
            await asyncio.sleep(pause)
            # A large fleet's dump costs CPU that changes need: at most ~5 % of the time.
            pause = next_pause(await self.dump())


async def _staged(staging: Callable[[], str]) -> str:
    """``staging`` run in a thread: its temp file's name. A cancel (synapse stopping, a
    SIGHUP) does not stop the thread, and the file it stages after the cancel had no owner:
    one ``.tmp`` more in the state directory each time. Whichever side comes second, the
    thread done or the cancel, removes it."""
    lock = threading.Lock()
    staged: list[str] = []  # the thread's file, once written
    abandoned: list[bool] = []  # the caller is gone (cancelled)

    def run() -> str:
        name = staging()
        with lock:
            if abandoned:
                discard(name)
            else:
                staged.append(name)
        return name

    try:
        return await asyncio.to_thread(run)
    except BaseException:
        with lock:
            abandoned.append(True)
            for name in staged:  # (finished, its answer not delivered before the cancel)
                discard(name)
        raise


def _decoded(
    names: list[str], answers: list[str], head: str, into: dict[str, list[str]], gone: list[str]
) -> Iterator[None]:
    """The rows of each answer into ``into``, WHOLE_BATCH backends a step: a round's ~100
    backends (1/ROTATION of 1,000 and the touched ones) decoded at once were 3-9 ms of one
    loop turn. A backend HAProxy lacks goes into ``gone`` and ends the steps."""
    for start in range(0, len(names), WHOLE_BATCH):
        for name, answer in zip(names[start : start + WHOLE_BATCH],
                                answers[start : start + WHOLE_BATCH], strict=True):  # fmt: skip
            rows = backend_rows(name, answer, head)
            if rows is None:
                gone.append(name)
                return
            into[name] = rows
        yield


def state_dumper(
    settings: Settings,
    runtime: list[RuntimeClient],
    managed: ManagedHAProxy | None,
    reader: RunningReader,
    writes: bool = True,
) -> StateDumper | None:
    """A runtime socket and a state file, in any mode: HAProxy's restarts use it, and so
    does a reload synapse did not make (the Airbnb way: an operator's `systemctl reload`
    loaded a file dumped at synapse's last reload, and a server that came back since was
    restored into maintenance). Not managed: a HAProxy that does not answer is skipped."""
    if not runtime or settings.state_file is None or not (writes or managed):
        return None  # (``writes``: Airbnb ``do_writes: false`` writes nothing)
    # One connection with the outside-reload watch (``SharedClient``: Airbnb mode, not kept).
    own = reader.outside.client if reader.outside else RuntimeClient(
        runtime[0].path, runtime[0].timeout, keep_idle=KEEP_IDLE_S if managed else 0.0
    )  # fmt: skip
    alive = (lambda: managed.alive) if managed is not None else (lambda: True)
    dumper = StateDumper(own, settings.state_file, alive)
    dumper.change_gate = reader.change_gate
    dumper.deferred = lambda: bool(reader.unread)
    reader.on_touched = dumper.touched
    reader.unsaved = lambda: set(dumper.unsaved)
    return dumper
