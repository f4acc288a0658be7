"""Watch event -> applied, per change (``synapse_watch_to_applied_seconds``).

A change applied at runtime or by a reload at once is timed when the apply returns; one
that went in beside a reload under way when HAProxy answered its commands (``served_at``:
the reload is an older change's); one whose reload waits for its turn (rate limiting) is
timed when that reload has happened (the applier's ``flush``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from synapse.contract import Applier, ApplyOutcome, ApplyResult
from synapse.metrics import SynapseMetrics


class ApplyLatency:
    def __init__(self, metrics: SynapseMetrics) -> None:
        self.metrics = metrics
        self._awaiting_reload: list[float] = []  # event times waiting for a pending reload
        self._flush_task: asyncio.Task[None] | None = None

    def observe(self, applier: Applier, event_times: list[float], result: ApplyResult) -> None:
        outcome = result.reload
        if not outcome.applied:
            return  # never applied: HAProxy kept the old state
        if outcome is not ApplyOutcome.PENDING or result.served_at is not None:
            now = result.served_at or time.monotonic()
            for moment in event_times:
                self.metrics.apply_latency.observe(max(0.0, now - moment))
            return
        self._awaiting_reload.extend(event_times)
        if self._flush_task is None or self._flush_task.done():
            self._flush_task = asyncio.get_running_loop().create_task(self._after_reload(applier))

    async def _after_reload(self, applier: Applier) -> None:
        with contextlib.suppress(Exception):
            await applier.flush()
        times, self._awaiting_reload = self._awaiting_reload, []
        now = time.monotonic()
        for moment in times:
            self.metrics.apply_latency.observe(max(0.0, now - moment))
