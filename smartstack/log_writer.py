"""Log lines written on a thread of their own, so that a stuck stderr never stalls a daemon.

A daemon's stderr is a pipe to journald, to Docker's log driver or to a terminal. When its
reader stops reading (journald behind a slow disk, a busy dockerd, a terminal paused with
Ctrl-S) the pipe's 64 KB fill and the next write blocks. Written from the event loop, one
line froze the whole daemon: nerve kept a failing instance registered for as long as the
pipe stayed full (still registered 15 s after its service failed; withdrawn only once the
pipe drained), synapse stopped following the registry.

Here a daemon's threads only queue the line. The writer thread writes it; up to
``capacity`` characters of lines wait for it, and beyond that lines are dropped and counted: a
``log_lines_dropped`` line says how many when the stream moves again, and
``<daemon>_log_lines_dropped_total`` counts them all (/metrics). Losing log lines is the
lesser harm: the daemon's own state and /metrics stay exact.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import TextIO

CAPACITY = 1 << 20  # characters of lines waiting for the writer: ~5,000 lines
EXIT_WAIT = 0.5  # seconds an exit waits for the last lines (a stuck stream: they are lost)


class BackgroundStreamHandler(logging.Handler):
    """A ``logging.Handler`` that never blocks its caller on the stream."""

    def __init__(self, stream: TextIO, capacity: int = CAPACITY) -> None:
        super().__init__()
        self.stream, self.capacity = stream, capacity
        self.dropped_total = 0  # lines never written: queue full, or the stream failed
        self._lines: deque[str] = deque()
        self._queued = 0  # bytes in _lines and in the batch being written
        self._dropped = 0  # not said yet
        self._dropped_since = 0.0
        self._writing = False
        self._closing = False
        self._wake = threading.Condition(threading.Lock())
        self._thread: threading.Thread | None = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + "\n"
        except Exception:  # logging's own contract: report, never raise
            self.handleError(record)
            return
        with self._wake:
            if self._queued + len(line) > self.capacity or self._closing:
                self._count_dropped(1)
                return
            self._lines.append(line)
            self._queued += len(line)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
                self._thread.start()
            self._wake.notify()

    def _count_dropped(self, lines: int) -> None:
        if not self._dropped:
            self._dropped_since = time.monotonic()
        self._dropped += lines
        self.dropped_total += lines

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._lines and not self._closing:
                    self._wake.wait()
                if not self._lines:
                    return
                batch, self._writing = "".join(self._lines), True
                count, size = len(self._lines), len(batch)
                self._lines.clear()
                dropped, self._dropped = self._dropped, 0
                since = self._dropped_since
            if dropped:  # the lines dropped came after this batch: say so after it
                batch += self._dropped_line(dropped, since)
            written = self._write(batch)
            with self._wake:
                self._queued -= size
                self._writing = False
                if not written:
                    self._count_dropped(count)
                self._wake.notify_all()

    def _write(self, text: str) -> bool:
        try:
            self.stream.write(text)
            self.stream.flush()
            return True
        except Exception:  # EPIPE, EIO, a closed stream, no stderr at all: the lines are lost
            return False  # (and the writer lives on: it must never die)

    def _dropped_line(self, lines: int, since: float) -> str:
        record = logging.LogRecord(
            "smartstack.logs", logging.WARNING, __file__, 0, "log_lines_dropped", None, None
        )
        seconds = round(time.monotonic() - since, 1)
        record.smartstack_fields = {  # type: ignore[attr-defined]
            "lines": lines,
            "seconds": seconds,
            "reason": "stderr was not read (its reader stuck or gone)",
        }
        try:
            return self.format(record) + "\n"
        except Exception:  # a fallback line rather than none
            return f"log_lines_dropped lines={lines}\n"

    def flush(self, timeout: float = EXIT_WAIT) -> None:
        """Wait (at most ``timeout`` s) for the lines queued so far to be written."""
        deadline = time.monotonic() + timeout
        with self._wake:
            while (self._lines or self._writing) and self._thread is not None:
                left = deadline - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    return
                self._wake.wait(left)

    def close(self) -> None:
        """The writer ends once the lines queued are written (logging.shutdown flushes
        first, with its wait; lines logged after this are dropped)."""
        with self._wake:
            self._closing = True
            self._wake.notify_all()
        super().close()
