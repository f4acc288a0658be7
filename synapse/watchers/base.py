"""What every watcher shares: its lifecycle, its status, how it reports.

A watcher follows one service's namespace in one registry and, on every change,
hands the reconciler a ``Report`` (``synapse.model``): the FULL current list of
registrations it knows (never a delta), plus how many records it is skipping as
invalid. Handing over is a plain call on the event loop (``sink(report)``) that only
stores the report: a watcher never waits for HAProxy, and the reconciler never waits
for a watcher.

When the registry becomes unreachable a watcher simply stops reporting: the last
list it reported stays in force until it knows better.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar

from smartstack.backoff import Backoff
from smartstack.logs import event
from smartstack.record import Registration
from smartstack.tasks import cancel_and_wait, stray_cancel
from synapse.config import ServiceConfig
from synapse.discovery_config import DiscoveryConfig
from synapse.model import Found, Report, Sink

if TYPE_CHECKING:
    from smartstack.etcd import EtcdConnection
    from smartstack.etcd_json import EtcdJsonConnection
    from smartstack.zookeeper import ZooKeeperPool
    from synapse.metrics import SynapseMetrics

log = logging.getLogger("synapse.watchers")

RESTART_BASE, RESTART_CAP = 1.0, 60.0  # backoff between restarts of a crashed watcher


@dataclass(slots=True)  # one per registry record: no __dict__ each
class Entry:
    """What a watcher knows of one registry record: the registration, or why it was refused."""

    registration: Registration | None
    reason: str | None = None
    version: int | None = None  # ZooKeeper mzxid / etcd mod_revision; None: nothing to compare
    sequence: int | None = None  # see Found.sequence


@dataclass
class WatcherContext:
    """Shared resources handed to every watcher by the daemon."""

    loop: asyncio.AbstractEventLoop
    metrics: SynapseMetrics
    zk_pool: ZooKeeperPool | None = None
    # The (shared) connection for a discovery block: endpoints, user, password, TLS.
    etcd_connection: Callable[[DiscoveryConfig], EtcdConnection | EtcdJsonConnection] | None = None
    zk_session_timeout: float = 10.0
    # A watch event named a change still to be read: background work waits (ChangeGate.expect)
    change_coming: Callable[[], None] | None = None
    # The watchers' values are the service's gauges (not while a SIGHUP's replacement waits)
    gauges: bool = True


class Watcher(ABC):
    """Base of all watchers: start/stop, reporting, counters and status."""

    method: ClassVar[str] = "base"

    def __init__(self, service: str, config: ServiceConfig, sink: Sink, ctx: WatcherContext):
        self.service = service
        self.config = config
        self.discovery = config.discovery
        self.sink = sink
        self.ctx = ctx
        self.metrics = ctx.metrics
        self._task: asyncio.Task[None] | None = None
        self._stopped = False
        self._last: tuple[tuple[Found, ...], int, Any, bool] | None = None
        self.generator_config: dict[str, Any] = {}  # set by watchers that read it
        self.connected = False
        self.last_error: str | None = None
        self.last_change: float | None = None  # wall clock of the last reported change
        self.reports = 0
        self.restarts = 0  # times run() crashed and was started again
        self.noted_kinds: set[str] = set()  # record notes already logged as a warning

    # --- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Start watching in the background; returns at once."""
        self._task = self.ctx.loop.create_task(self._jittered_run(), name=f"watch-{self.service}")

    async def _jittered_run(self) -> None:
        if self.discovery.start_jitter:
            # Spread a fleet-wide restart so the registry is not hit by every host at once.
            await asyncio.sleep(random.uniform(0, self.discovery.start_jitter))
        backoff = Backoff(RESTART_BASE, RESTART_CAP)
        while not self._stopped:
            try:
                await self.run()
                return
            except asyncio.CancelledError as exc:
                if self._stopped or not stray_cancel(exc):
                    raise
                self._crashed(exc)  # a call cancelled under it: not our stop
            except Exception as exc:  # a watcher bug must not take the daemon down...
                self._crashed(exc)
            # ... nor leave its service frozen: the last list stays while it starts again.
            with contextlib.suppress(Exception):
                await self.close()
            await asyncio.sleep(backoff.next())

    def _crashed(self, exc: BaseException) -> None:
        self.set_connected(False, f"{type(exc).__name__}: {exc}"[:500])
        self.restarts += 1
        self.metrics.statsd.incr("synapse", "watcher", self.method, self.service, "crash")
        log.error("watcher for %s crashed; restarting it", self.service, exc_info=exc)

    @abstractmethod
    async def run(self) -> None:
        """Watch until cancelled."""

    async def stop(self) -> None:
        self._stopped = True
        task, self._task = self._task, None
        with contextlib.suppress(Exception):  # a watcher's failure must not stop the others' stop
            await cancel_and_wait(task)
        await self.close()

    async def close(self) -> None:  # noqa: B027 - optional hook, most watchers hold nothing
        """Release registry resources (override)."""

    # --- reporting ---------------------------------------------------------------------

    def report(
        self,
        found: list[Found] | tuple[Found, ...],
        skipped: int,
        event_time: float,
        partial: bool = False,  # see Report.partial
    ) -> None:
        """Hand the full current list to the reconciler, unless it is what we sent last."""
        if self._stopped:
            return
        state = (tuple(found), skipped, self.generator_config, partial)
        if self.ctx.gauges:
            self.metrics.skipped_records.labels(self.service).set(skipped)
        if state == self._last:
            return
        self._last = state
        self.reports += 1
        self.last_change = time.time()
        report = Report(self.service, self.method, state[0], skipped, event_time,
                        self.generator_config, partial)  # fmt: skip
        self.sink(report)

    def report_entries(
        self, entries: Mapping[str, Entry], origin: Callable[[str], str], event_time: float
    ) -> None:
        """Report the valid entries (sorted by key) and count the refused ones."""
        found = [
            Found(entry.registration, origin(key), entry.sequence)
            for key, entry in sorted(entries.items())
            if entry.registration is not None
        ]
        skipped = sum(1 for entry in entries.values() if entry.registration is None)
        self.report(found, skipped, event_time)

    def change_coming(self) -> None:
        """An event names a change whose report needs a read first (``ChangeGate.expect``)."""
        if self.ctx.change_coming is not None:
            self.ctx.change_coming()

    def count_event(self) -> None:
        self.metrics.watch_events.labels(self.service, self.method).inc()
        self.metrics.statsd.incr("synapse", "watcher", self.method, self.service, "event")

    def bad_record(self, origin: str, reason: str) -> None:
        """Log and count a refused record (callers do this once per distinct record)."""
        self.metrics.bad_records.labels(self.service, self.method).inc()
        self.metrics.statsd.incr("synapse", "watcher", self.method, self.service, "bad_record")
        event(
            log,
            "bad_record",
            level=logging.WARNING,
            service=self.service,
            origin=origin[:200],
            reason=reason,
        )

    def set_connected(self, connected: bool, error: str | None = None) -> None:
        if self.connected != connected:  # statsd: each connection change, not each retry
            state = "connected" if connected else "disconnected"
            self.metrics.statsd.incr("synapse", "watcher", self.method, self.service, state)
        self.connected = connected
        if error is not None:
            self.last_error = error
        elif connected:
            self.last_error = None
        if self.ctx.gauges and not self._stopped:  # (a replaced one's last words: not)
            self.metrics.watcher_connected.labels(self.service).set(1 if connected else 0)

    def hide_gauges(self) -> None:
        """This watcher (a SIGHUP's replacement, before ``start``; a replaced one) and the
        children it makes, which share its context, leave the service's gauges alone."""
        self.ctx = replace(self.ctx, gauges=False)

    def publish_gauges(self) -> None:
        """This watcher took the service over: its values are the service's gauges now."""
        self.ctx.gauges = True
        self.metrics.watcher_connected.labels(self.service).set(1 if self.connected else 0)
        self.metrics.skipped_records.labels(self.service).set(self._last[1] if self._last else 0)

    def status(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "connected": self.connected,
            "reports": self.reports,
            "last_change": self.last_change,
            "skipped_records": self._last[1] if self._last else 0,
            "error": self.last_error,
            "restarts": self.restarts,
        }
