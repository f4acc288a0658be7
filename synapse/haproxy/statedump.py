"""Keeps HAProxy's server-state file fresh, so a crashed HAProxy restarts with today's states.

The installer dumps `show servers state` before each reload; between reloads states change
(HAProxy's checks, runtime operations), and a HAProxy that dies is started again from
that file. Every DUMP_INTERVAL the dump is read again and written (atomically) only when a
state changed: the column that counts seconds since the last change is left out of the
comparison, so a quiet fleet costs one socket command per interval and no disk write.

The dump never holds up an apply (the controller's lock): it is compared a chunk at a
time while no apply runs (waiting at most MAX_PAUSE in all), and written to a temp file
outside the lock. Only the rename takes the lock, and only if nobody else wrote the file
since the dump was read: the installer writes a newer dump right before a reload, and an
older text must not replace it (that round is skipped; the next one reads again). A dump
may still miss an apply's runtime commands that ran after it was read: the next round,
a second later, has them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from smartstack.logs import event
from synapse.atomic import discard, stage
from synapse.haproxy.answers import check_servers_state
from synapse.haproxy.managed import ManagedHAProxy
from synapse.haproxy.runtime import RuntimeClient
from synapse.haproxy.settings import Settings
from synapse.haproxy.sockets import HAProxySocketError, UnexpectedAnswer

log = logging.getLogger("synapse.haproxy")
DUMP_INTERVAL = 1.0
MAX_PAUSE = 30.0  # a slow dump must not leave the state file stale for minutes
CPU_SHARE = 20  # pause = CPU_SHARE x the dump's own CPU time: at most ~5 % of a core
_SINCE_CHANGE = 9  # srv_time_since_last_change, in `show servers state` (format 1)
CHUNK = 250  # rows compared per step on the event loop (~0.5 ms)
CHUNK_GAP = 0.002  # seconds the loop is left alone after each step


def comparable(dump: str) -> bytes:
    """A digest of the dump without what changes every second (so an unchanged fleet
    compares equal). A digest, not the rows: 20,000 servers' rows kept between dumps
    were ~12 MB (tracemalloc)."""
    digest = hashlib.blake2b(digest_size=16)
    for _ in _digest_steps(dump, digest):
        pass
    return digest.digest()


def _digest_steps(dump: str, digest: Any) -> Iterator[None]:
    """Feed ``digest`` CHUNK rows at a time, yielding after each: the dumper gives the
    event loop a turn between them (``StateDumper._checked_key``). The rows are split a
    chunk at a time: all 20,000 at once were ~2 MB of small strings every second, which
    the allocator keeps for the process once long-lived objects land between them."""
    start, size = 0, len(dump)
    while start < size:
        end = start
        for _ in range(CHUNK):  # the end of the chunk's last row
            end = dump.find("\n", end) + 1
            if not end:
                end = size
                break
        rows = []
        for line in dump[start:end].splitlines():
            if not line.startswith("#"):  # (HAProxy separates the columns by one space)
                fields = line.split(" ", _SINCE_CHANGE + 1)  # the rest stays one string
                if len(fields) > _SINCE_CHANGE:
                    del fields[_SINCE_CHANGE]
                    line = " ".join(fields)
            rows.append(line)
        digest.update(("\n".join(rows) + "\n").encode())
        start = end
        yield


def next_pause(cpu_seconds: float) -> float:
    """Seconds until the next dump after one that cost ``cpu_seconds`` of CPU.

    Based on the dump's own CPU time, not the wall time around it: a hung socket or a busy
    thread pool costs no CPU, and with wall time one 10 s stall stretched the next gap to
    200 s, just when the state file matters. Capped at MAX_PAUSE all the same."""
    return min(MAX_PAUSE, max(DUMP_INTERVAL, CPU_SHARE * cpu_seconds))


def _check_last_row(text: str) -> None:
    """UnexpectedAnswer when the last row has fewer columns than the header names: a dump
    torn off mid-row (the process died while answering) must not become the state file."""
    lines = text.rstrip("\n").rsplit("\n", 1)
    last = lines[-1]
    header = next((line for line in text.split("\n", 3)[:3] if line.startswith("#")), None)
    if len(lines) < 2 or header is None or last.startswith("#"):
        return  # no rows (or no header to count by): nothing torn
    if len(last.split()) < len(header.lstrip("#").split()):
        raise UnexpectedAnswer(f"a servers state dump cut short: last row {last[:120]!r}")


class StateDumper:
    """Background task: ``show servers state`` into ``path`` whenever a state changed."""

    def __init__(self, runtime: RuntimeClient, path: Path, alive: Callable[[], bool]) -> None:
        self.runtime, self.path, self._alive = runtime, path, alive
        self._last: bytes | None = None
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()  # the controller's, once started (a lone dumper: its own)
        self._deadline = 0.0  # past it, a dump stops waiting for applies to end
        self.writes = 0

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

    async def dump(self) -> float:
        """One round; HAProxy not answering is skipped (down or reloading: the supervisor
        and the installer deal with it). Returns the CPU seconds the dump's parse took."""
        if not self._alive():
            return 0.0
        self._deadline = time.monotonic() + MAX_PAUSE
        await self._idle()
        seen = self._file_id()
        try:
            text = await self.runtime.execute("show servers state")
            key, cpu = await self._checked_key(text)
        except HAProxySocketError:
            return 0.0
        if key == self._last:
            return cpu
        try:
            if not await self._install(text, seen):
                return cpu  # the installer wrote a newer one meanwhile: the next round
        except OSError as err:
            event(log, "haproxy_state_dump_failed", level=logging.WARNING, error=str(err))
            return cpu
        self._last = key
        self.writes += 1
        return cpu

    def _file_id(self) -> tuple[int, int] | None:
        """Which write of the state file is there (inode, mtime): a rename changes it."""
        try:
            found = os.stat(self.path)
        except OSError:
            return None
        return found.st_ino, found.st_mtime_ns

    async def _install(self, text: str, seen: tuple[int, int] | None) -> bool:
        """Replace the state file with ``text`` unless it was written since ``text`` was
        read (``seen``: its identity then). Staged (written, fsynced) outside the lock."""
        staged = await asyncio.to_thread(stage, self.path, text)
        try:
            async with self._lock:
                if self._file_id() != seen:
                    return False
                os.replace(staged, self.path)
                staged = ""
            return True
        finally:
            if staged:
                discard(staged)

    async def _checked_key(self, text: str) -> tuple[bytes, float]:
        """(comparable form, CPU seconds spent on it). With 20,000 servers the comparison
        is ~40 ms of Python: on the event loop, CHUNK rows per step and none while an
        apply runs, so a change waits for one chunk at most. (In a thread it shared the
        GIL with the changes: the slowest 4 % of a loaded bench's changes, 28-57 ms, ran
        beside it, the fastest half never.) An error message must not become a state
        file: checked by its header and its last row, not by parsing every row."""
        began = time.thread_time()
        check_servers_state(text)
        _check_last_row(text)
        digest, cpu = hashlib.blake2b(digest_size=16), 0.0
        for _ in _digest_steps(text, digest):
            cpu += time.thread_time() - began
            await self._idle()
            began = time.thread_time()
        return digest.digest(), cpu + time.thread_time() - began

    async def _idle(self) -> None:
        """A gap for whatever comes (a registry event takes a few turns of the loop to
        reach the controller), then wait while an apply runs: a dump beside the first
        apply (which then read every server after HAProxy served) held up the change
        waiting for that apply."""
        await asyncio.sleep(CHUNK_GAP)
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


def state_dumper(
    settings: Settings, runtime: list[RuntimeClient], managed: ManagedHAProxy | None
) -> StateDumper | None:
    """Managed mode with a runtime socket and a state file: HAProxy's restarts use it."""
    if managed is None or not runtime or settings.state_file is None:
        return None
    return StateDumper(runtime[0], settings.state_file, lambda: managed.alive)
