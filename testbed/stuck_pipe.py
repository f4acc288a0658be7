"""A daemon's stderr whose reader stops reading: journald stuck behind a slow disk, a busy
dockerd's log driver, a terminal paused with Ctrl-S. A FIFO: the test (or the demo) holds
the read end, ``fill()`` writes until the pipe is full (a write of the daemon's then
blocks), ``drain()`` reads what is there and ``read_into()`` keeps reading into a file, as
the reader coming back would."""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from pathlib import Path


class StuckPipe:
    def __init__(self, path: Path) -> None:
        self.path = path
        os.mkfifo(path)
        # Opened first, so that the daemon's open for writing does not wait for a reader.
        self._reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK)

    def fill(self) -> int:
        """Fill the pipe to the last byte (newlines: nothing a reader looks for)."""
        writer, filled = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK), 0
        try:
            for size in (4096, 1):  # then topped up byte by byte: a pipe takes what fits
                with contextlib.suppress(BlockingIOError):
                    while True:
                        filled += os.write(writer, b"\n" * size)
            return filled
        finally:
            os.close(writer)

    def drain(self, quiet: float = 0.5, seconds: float = 10.0) -> str:
        """Read until nothing came for ``quiet`` s (at most ``seconds``): the lines the
        daemon wrote once its stderr moved again."""
        chunks, last, end = [], time.monotonic(), time.monotonic() + seconds
        while time.monotonic() - last < quiet and time.monotonic() < end:
            try:
                chunk = os.read(self._reader, 65536)
            except BlockingIOError:
                chunk = b""
            if chunk:
                chunks.append(chunk)
                last = time.monotonic()
            else:
                time.sleep(0.02)
        return re.sub(r"\n+", "\n", b"".join(chunks).decode(errors="replace")).strip("\n")

    def read_into(self, target: Path) -> threading.Thread:
        """The reader is back for good: the pipe is copied into ``target`` until its last
        writer exits (the filler's newlines left out)."""

        def copy() -> None:
            with target.open("ab") as out:
                while True:
                    try:
                        chunk = os.read(self._reader, 65536)
                    except BlockingIOError:
                        time.sleep(0.02)
                        continue
                    if not chunk:
                        return
                    out.write(re.sub(rb"\n+", b"\n", chunk).lstrip(b"\n"))
                    out.flush()

        thread = threading.Thread(target=copy, name="stuck-pipe-reader", daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        os.close(self._reader)
