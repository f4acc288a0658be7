"""Log lines written on a thread of their own, so that a stuck stderr never stalls a daemon.

A daemon's stderr is a pipe to journald, to Docker's log driver or to a terminal. When its
reader stops reading (journald behind a slow disk, a busy dockerd, a terminal paused with
Ctrl-S) the pipe's 64 KB fill and the next write blocks. Written from the event loop, one
line froze the whole daemon: nerve kept a failing instance registered for as long as the
pipe stayed full (still registered 15 s after its service failed; withdrawn only once the
pipe drained), synapse stopped following the registry.

Here a daemon's threads only queue the line; the writer thread writes it. A stderr that
is a plain file (``2>>file``) has no reader, but its disk can stall (EBS, NFS, a busy
array): written from the event loop, one line kept a failed instance registered for the
whole stall (12 s of 12, review s34). So a file's line is queued too, and its caller waits
for it to be on disk, keeping the log in order with what the daemon does next, for at most
``FILE_WAIT`` s: past that the file is stalled and nobody waits until the writer has caught
up (lines then queue, and drop, as for a pipe). Up to
``capacity`` characters of lines wait for it, and beyond that lines are dropped and
counted: a ``log_lines_dropped`` line says how many as soon as the stream moves again, and
``<daemon>_log_lines_dropped_total`` counts them all (/metrics). Losing log lines is the
lesser harm: the daemon's own state and /metrics stay exact.

Lines go out a few at a time, at most ``CHUNK`` characters cut at line ends (a pipe takes a
write of up to 4 KB whole): an exit while the reader is slow leaves no half line. An exit
waits for the lines queued while the stream moves (at most ``EXIT_MAX`` s, ``EXIT_STALL``
s without progress); a backlog too long for that keeps its warnings and errors and the
newest lines (the stop's own), and says how many it dropped.
"""

from __future__ import annotations

import io
import logging
import os
import stat
import threading
import time
import traceback
import weakref
from collections import deque
from typing import TextIO

CAPACITY = 1 << 20  # characters of lines waiting for the writer: ~5,000 lines
CHUNK = 1024  # characters per write: <= 4 KB, what a pipe takes whole, even in UTF-8
EXIT_BACKLOG = 1 << 16  # characters an exit still waits for, oldest info/debug lines first
EXIT_STALL = 0.5  # seconds an exit waits without a byte going out (a stuck stream)
EXIT_MAX = 5.0  # seconds an exit waits at most (a slow stream)
FILE_WAIT = 0.5  # seconds a caller waits for its line to reach a plain file (a stalled disk)

# [level, text with its newline, lines dropped here, since when]: a line, or (dropped > 0)
# the place of dropped lines in the order, said as a log_lines_dropped line
_Entry = list


class BackgroundStreamHandler(logging.Handler):
    """A ``logging.Handler`` that never blocks its caller on the stream."""

    dropped_in_process = 0  # every handler's drops (a second logs.setup keeps the count)

    def __init__(self, stream: TextIO | None, capacity: int = CAPACITY) -> None:
        super().__init__()
        self.stream, self.capacity = stream, capacity
        self.dropped_total = 0  # lines never written: queue full, or the stream failed
        self._lines: deque[_Entry] = deque()
        self._queued = 0  # characters in _lines and in the chunk being written
        self._written = 0  # chunks written: an exit's wait sees progress
        self._writing = False
        self._closing = False
        self._lines_in = self._lines_out = 0  # lines queued / taken off the queue, ever
        self._stalled = False  # a plain file's write outlasted FILE_WAIT: nobody waits
        self._wake = threading.Condition(threading.Lock())
        self._thread: threading.Thread | None = None
        self._direct = _regular_file(stream)
        _HANDLERS.add(self)

    def _after_fork_in_child(self) -> None:
        """A forked child has no writer thread (and maybe a lock another thread held): a new
        lock, a writer of its own started by its first line. The lines the parent queued are
        the parent's to write (it runs on): not written twice. Without this a plain file's
        first child line waited FILE_WAIT, the file stayed stalled and no child line was
        written (review s34)."""
        self._wake = threading.Condition(threading.Lock())
        self._thread, self._writing, self._stalled = None, False, False
        self._lines, self._queued = deque(), 0
        self._lines_in = self._lines_out = 0

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:  # logging's own contract: report, never raise
            self.handleError(record)
            return
        self.say(line, record.levelno)

    def say(self, line: str, level: int = logging.WARNING) -> None:
        """Queue one line as it is (a CLI's ``warning: ...``): never blocks on a pipe; a plain
        file's line is waited for, at most FILE_WAIT s (``_wait_on_disk``)."""
        line += "\n"
        with self._wake:
            if self._queued + len(line) > self.capacity or self._closing:
                self._count_dropped(1)
                return
            self._lines.append([level, line, 0, 0.0])
            self._queued += len(line)
            self._lines_in += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
                self._thread.start()
            self._wake.notify()
            if self._direct:
                self._wait_on_disk(self._lines_in)

    def _wait_on_disk(self, line: int) -> None:
        """A plain file: wait (the lock held by the caller) until ``line`` is written, for
        at most FILE_WAIT s; a stalled disk is then waited for no more until it caught up."""
        deadline = time.monotonic() + FILE_WAIT
        while self._lines_out < line and not self._stalled:
            left = deadline - time.monotonic()
            if left <= 0:
                self._stalled = True
                return
            self._wake.wait(left)

    def handleError(self, record: logging.LogRecord) -> None:  # (logging's name)
        """logging prints a failed format to stderr itself, blocking: queued here instead."""
        text = "".join(traceback.format_exc()).rstrip("\n")
        self.say(f"--- logging error in {record.name}: {record.msg!r}\n{text}", logging.ERROR)

    def _count_dropped(self, lines: int, first: bool = False) -> None:
        """``lines`` lost: said where they were lost (the end of the queue, or its head
        for lines already taken), by a marker the writer turns into log_lines_dropped."""
        if lines <= 0:
            return
        self.dropped_total += lines
        BackgroundStreamHandler.dropped_in_process += lines
        end = self._lines[0] if first and self._lines else self._lines[-1] if self._lines else None
        if end is not None and end[2]:
            end[2] += lines
            return
        marker = [logging.WARNING, "", lines, time.monotonic()]
        self._lines.appendleft(marker) if first else self._lines.append(marker)
        if self._thread is not None:
            self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._lines and not self._closing:
                    self._wake.wait()
                if not self._lines:
                    return
                chunk, count, size = self._take_chunk()
                self._writing = True
            written = self._write(chunk)
            with self._wake:
                self._queued -= size
                self._lines_out += count
                self._writing = False
                self._written += 1
                if not written and count:
                    self._count_dropped(count, first=True)
                if not self._lines:  # caught up: a plain file's callers wait for it again
                    self._stalled = False
                self._wake.notify_all()

    def _take_chunk(self) -> tuple[str, int, int]:
        """(text, lines, characters queued): the oldest lines, at most CHUNK characters
        (one line at least); a marker of dropped lines becomes its log_lines_dropped line."""
        parts: list[str] = []
        count = size = 0
        while self._lines and (not parts or size + len(self._lines[0][1]) <= CHUNK):
            _, line, dropped, since = self._lines.popleft()
            if dropped:
                parts.append(self._dropped_line(dropped, since))
                continue
            parts.append(line)
            count, size = count + 1, size + len(line)
        return "".join(parts), count, size

    def _write(self, text: str) -> bool:
        try:
            self.stream.write(text)  # type: ignore[union-attr]
            self.stream.flush()  # type: ignore[union-attr]
            return True
        except Exception:  # EPIPE, EIO, a closed stream, no stderr at all: the lines are lost
            return False  # (and the writer lives on: it must never die)

    def _dropped_line(self, lines: int, since: float) -> str:
        record = logging.LogRecord(
            "smartstack.logs", logging.WARNING, __file__, 0, "log_lines_dropped", None, None
        )
        record.smartstack_fields = {  # type: ignore[attr-defined]
            "lines": lines,
            "seconds": round(time.monotonic() - since, 1),
            "reason": "stderr did not take them (its reader stuck, slow or gone; its disk stalled)",
        }
        try:
            return self.format(record) + "\n"
        except Exception:  # a fallback line rather than none
            return f"log_lines_dropped lines={lines}\n"

    def flush(self, stall: float = EXIT_STALL, most: float = EXIT_MAX) -> None:
        """Wait for the lines queued so far to be written: while chunks go out, at most
        ``most`` s; ``stall`` s without one going out (a stuck stream) ends the wait."""
        start = time.monotonic()
        with self._wake:
            self._trim_backlog()
            seen, progress = self._written, start
            while (self._lines or self._writing) and self._thread is not None:
                now = time.monotonic()
                if self._written != seen:
                    seen, progress = self._written, now
                left = min(start + most, progress + stall) - now
                if left <= 0 or not self._thread.is_alive():
                    return
                self._wake.wait(left)

    def _trim_backlog(self) -> None:
        """More than EXIT_BACKLOG waiting: the oldest info and debug lines go (counted), so
        that what an exit waits for is mostly its own last lines and every warning."""
        excess = self._queued - EXIT_BACKLOG
        if excess <= 0:
            return
        kept: deque[_Entry] = deque()
        trimmed = 0
        for entry in self._lines:
            level, line, dropped, _ = entry
            if excess > 0 and level < logging.WARNING and not dropped:
                excess -= len(line)
                self._queued -= len(line)
                trimmed += 1
            else:
                kept.append(entry)
        self._lines = kept
        self._lines_out += trimmed
        self._count_dropped(trimmed, first=True)

    def close(self) -> None:
        """The writer ends once the lines queued are written (logging.shutdown flushes
        first, with its wait; lines logged after this are dropped)."""
        with self._wake:
            self._closing = True
            self._wake.notify_all()
        super().close()


_HANDLERS: weakref.WeakSet[BackgroundStreamHandler] = weakref.WeakSet()


def _reinit_after_fork() -> None:
    for handler in list(_HANDLERS):
        handler._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reinit_after_fork)


def _regular_file(stream: TextIO | None) -> bool:
    """Whether ``stream`` is a plain file (``2>>file``): its caller waits for its line while
    the disk takes writes (``FILE_WAIT``). A pipe, a socket (the journal), a terminal or
    anything unknown: the caller only queues it."""
    try:
        return stream is not None and stat.S_ISREG(os.fstat(stream.fileno()).st_mode)
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        return False
