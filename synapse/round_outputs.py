"""A round's outputs: file_output and the state file, written in threads after the hand-over."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from typing import Any

from smartstack.tasks import wait_event
from synapse.contract import RecordSink
from synapse.metrics import SynapseMetrics
from synapse.reload_diff import ServiceState
from synapse.selection import Selection
from synapse.state_cache import REBUILD_BUDGET, StateCache

STATE_FILE_INTERVAL = 1.0  # seconds between state file updates (each one writes every server)

# What a write records: the selections, the configured services, the generator settings.
Snapshot = tuple[Mapping[str, Selection], list[str], Mapping[str, Mapping[str, Any]]]


class RoundOutputs:
    """file_output per round; the state file (what ``snapshot`` gives, to the cache ``cache``
    returns: a SIGHUP may replace or remove it) at most once per STATE_FILE_INTERVAL: it
    holds every server, so writing it per change would cost the whole fleet per change."""

    def __init__(
        self,
        metrics: SynapseMetrics,
        cache: Callable[[], StateCache | None],
        snapshot: Callable[[], Snapshot],
    ) -> None:
        self._metrics = metrics
        self._cache = cache
        self._snapshot = snapshot
        self.task: asyncio.Task[None] | None = None
        self._dirty = False
        self._written_at = -STATE_FILE_INTERVAL
        self._stopping = asyncio.Event()
        metrics.state_file_failing_for = self._failing_for

    def _failing_for(self) -> float:
        cache = self._cache()
        return cache.write_streak.failing_for() if cache is not None else 0.0

    async def write(
        self,
        file_output: RecordSink | None,
        services: Mapping[str, ServiceState],
        changed: list[str],
        everything: bool,
    ) -> None:
        """file_output (changed services) and the state file, in threads: fsync must not
        stall the loop. Both run after the hand-over, off the path to HAProxy."""
        if file_output is not None and (changed or everything):
            names = services if everything else changed
            found = {n: services[n].selection for n in names}
            selections = {n: s for n, s in found.items() if s is not None}
            enabled = [n for n, s in services.items() if not s.config.file_output.disabled]
            written = await asyncio.to_thread(file_output.update, selections, enabled)
            self._metrics.file_writes.inc(len(written))
        if changed or everything:
            self.state_file_due()

    def state_file_due(self) -> None:
        """Something to record (a round's changes, a held swap's start): the next write,
        within the interval, records it."""
        if self._cache() is None:
            return
        self._dirty = True
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._writer())

    async def moved(self, old: StateCache | None) -> None:
        """A SIGHUP replaced the cache (``make_state_cache``: another path): the old path's
        failing streak ends, said; the new file gets every server now, not an interval later
        (a crash then a start with the registry down would find it empty)."""
        cache = self._cache()
        if old is not None and old is not cache:
            old.abandon(str(cache.path) if cache is not None else None)
        if cache is None:
            return
        self._dirty = True
        await self._flush()
        if self._dirty:  # (the next slice, or a refused write: the writer takes it)
            self.state_file_due()

    async def _writer(self) -> None:
        while self._dirty and not self._stopping.is_set():  # (stop: the final flush)
            delay = self._written_at + STATE_FILE_INTERVAL - time.monotonic()
            if delay > 0:
                await wait_event(self._stopping, delay)
            await self._flush()

    async def final(self) -> None:
        """On the way out: what is still to be written goes to the state file now."""
        self._stopping.set()
        task = self.task
        with contextlib.suppress(Exception):
            if task is not None and not task.done():
                await task
            await self._flush(final=True)

    async def _flush(self, final: bool = False) -> None:
        cache = self._cache()  # (a SIGHUP may replace or remove it meanwhile)
        if cache is None or not (self._dirty or final):  # (final: a held swap's key)
            self._dirty = False
            return
        self._dirty, self._written_at = False, time.monotonic()
        budget = None if final else REBUILD_BUDGET  # (on the way out: all of it at once)
        with contextlib.suppress(Exception):  # StateCache reports its own failures
            await asyncio.to_thread(cache.update, *self._snapshot(), budget)
        # the next slice; a failed write (full disk): retried each interval until written.
        # (``failing`` holds until an update's write succeeds: another thread's write of the
        # older servers meanwhile, an evacuation's, does not clear it.)
        self._dirty |= cache.pending or cache.evacuations_unsaved or cache.failing
