"""The config file HAProxy runs: what it says, and its writes, off the path to HAProxy.

synapse keeps this file equal to what HAProxy runs, so a reload or a restart loses
nothing. After runtime commands changed HAProxy, the new text is set here at once
(``set``: from then on ``text`` is what the controller compares against) and written in
the background: an atomic replace with fsync costs ~3-5 ms for a config of 20,000
servers, and the next change need not wait for it. Writes are serialised and the latest
text wins. Whatever makes HAProxy read the file (a reload, a start) calls ``flush()``
first, which waits until the disk has ``text`` and raises the OSError of a failed write;
after failed writes it cuts the writer's retry wait short (one attempt at once).
A steady stream of changes is written at most every WRITE_GAP (the first change after a
quiet moment at once; ``flush()`` never waits for the gap): at 20,000 servers each write
joins and encodes ~2 MB holding the GIL (~2 ms of CPU) that the next change needs, and
its fsync competes with the registry's own (a loaded bench's changes whose registry write
took 7-12 ms instead of ~2 ms came during these fsyncs of 5-40 ms).

The text comes in parts (one per service, see ``synapse.haproxy.render``): comparing
the parts of two configs costs next to nothing when most of them are the same objects,
and they are joined only when written or asked for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from smartstack.tasks import cancel_and_wait
from synapse.atomic import read_text, write_atomic
from synapse.haproxy.configtext import ParsedConfig, parse_config
from synapse.write_streak import WriteStreak

log = logging.getLogger("synapse.haproxy")

RETRY_DELAYS = (0.1, 0.5, 2.0, 5.0)  # seconds between attempts after a failed write
WRITE_GAP = 1.0  # seconds from the end of a write to the start of the next, unless flushed


def _write_parts(path: Path, parts: tuple[str, ...]) -> None:
    write_atomic(path, "".join(parts))


class ConfigFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._parsed: ParsedConfig | Callable[[], ParsedConfig] | None = None  # (parsed)
        self.error: str | None = None  # the last write failed (retried in the background)
        # said once a streak (a full disk fails every retry alike), and its end
        self.streak = WriteStreak(
            log, "haproxy_config_write_failed", "haproxy_config_write_recovered", str(path),
            logging.ERROR,
        )  # fmt: skip
        self.writes = 0
        self._parts: tuple[str, ...] | None = None  # None: no file
        self._text: str | None = None  # "".join(_parts), once asked for
        self._version = self._on_disk = 0  # of _parts, and of what the disk has
        self._task: asyncio.Task[None] | None = None
        self._attempt = asyncio.Event()  # set after the writer's next attempt
        self._urgent = asyncio.Event()  # flush() waits: write without the gap
        self._written_at = -WRITE_GAP  # loop time of the last write's end
        # Writes the text instead (flush() returns once it returns): ``LoadMark.write_config``,
        # the file and the marker naming it in one thread call.
        self.write: Callable[[Path, tuple[str, ...]], Awaitable[None]] | None = None

    @property
    def text(self) -> str | None:
        """What HAProxy runs: on disk, or being written there (None: no file yet)."""
        if self._text is None and self._parts is not None:
            self._text = "".join(self._parts)
        return self._text

    @property
    def parsed(self) -> ParsedConfig | None:
        """The parse of ``text`` (a candidate's, built when first asked for: a cold start
        does not wait for it before HAProxy reads the file)."""
        parsed = self._parsed
        if callable(parsed):
            parsed = self._parsed = parsed()
        return parsed

    @parsed.setter
    def parsed(self, parsed: ParsedConfig | Callable[[], ParsedConfig] | None) -> None:
        self._parsed = parsed

    @property
    def exists(self) -> bool:
        return self._parts is not None

    async def load(self) -> None:
        """Read what is on disk."""
        text = await asyncio.to_thread(read_text, self.path)
        self._parts, self._text = (None, None) if text is None else ((text,), text)
        self.parsed = None if text is None else parse_config(text)
        self._on_disk = self._version

    def set(
        self, parts: Sequence[str], parsed: ParsedConfig | Callable[[], ParsedConfig] | None = None
    ) -> bool:
        """Make the joined ``parts`` the file's content (written in the background); False
        when it already is. ``parsed``: their parse (or how to get it), when the caller has it."""
        parts = tuple(parts)
        old = self._parts
        if old is not None and len(old) == len(parts):
            # Same cut: equal parts, equal text. (Unequal parts are taken as a change even
            # if their text happens to be equal: one needless write, never a missed one.)
            same = old == parts
        else:
            same = old is not None and "".join(parts) == self.text
        if same:
            self._parts = parts  # keeps the cut of the caller's next config
            if parsed is not None:
                self.parsed = parsed  # same content; this parse shares objects downstream
            return False
        self._parts, self._text = parts, None
        self.parsed = parsed if parsed is not None else parse_config(self.text or "")
        self._version += 1
        self._start_writer()
        return True

    async def flush(self) -> None:
        """Wait until the disk has ``text``; OSError when the writer's next attempt fails
        (made at once, not after its retry wait; it keeps trying in the background)."""
        while self._on_disk != self._version:
            attempt = self._attempt
            self._urgent.set()
            self._start_writer()
            await attempt.wait()
            if self.error is not None and self._on_disk != self._version:
                raise OSError(f"cannot write {self.path}: {self.error}")

    async def remove(self) -> None:
        """No file again: it held a config HAProxy refused to start with, and there was none
        before (the writer has nothing left to write)."""
        self._parts = self._text = self.parsed = None
        self._on_disk = self._version
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(self.path.unlink)

    async def close(self) -> None:
        """Write what is pending (best effort), then stop the writer."""
        with contextlib.suppress(OSError, TimeoutError):
            await asyncio.wait_for(self.flush(), 10.0)
        await cancel_and_wait(self._task)

    def _start_writer(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._write_latest())

    async def _write_latest(self) -> None:
        try:
            await self._write_pending()
        finally:
            self._urgent.clear()

    async def _write_pending(self) -> None:
        failures = 0
        loop = asyncio.get_running_loop()
        while self._on_disk != self._version and self._parts is not None:
            gap = self._written_at + WRITE_GAP - loop.time()
            if gap > 0 and not self._urgent.is_set():
                with contextlib.suppress(TimeoutError):  # latest wins: later sets coalesce
                    await asyncio.wait_for(self._urgent.wait(), gap)
                continue
            version, parts = self._version, self._parts
            try:
                if self.write is not None:
                    await self.write(self.path, parts)
                else:
                    await asyncio.to_thread(_write_parts, self.path, parts)
            except OSError as err:
                self.error = f"{err.strerror or err}"
                failures += 1
                delay = RETRY_DELAYS[min(failures, len(RETRY_DELAYS)) - 1]
                effect = "retried; the file lags what HAProxy runs (a reload waits for it)"
                self.streak.write_failed(err, retry_in_s=delay, effect=effect)
            else:
                self._on_disk, self.error, failures = version, None, 0
                self.writes += 1
                self._written_at = loop.time()
                self.streak.written()
            attempt, self._attempt = self._attempt, asyncio.Event()
            self._urgent.clear()  # (this attempt answers every flush waiting so far)
            attempt.set()
            if self.error is not None:  # (``delay``: this failure's, set above)
                # A flush tries again at once: a crashed HAProxy's restart waited up to
                # 5 s here for an attempt whose failure it ignores.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._urgent.wait(), delay)
