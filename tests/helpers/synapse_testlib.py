"""Helpers for watcher tests: a sink that collects reports and waits for conditions.

(``eventually`` is the one of ``applier_fakes``, re-exported for these tests.)
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

from applier_fakes import eventually
from prometheus_client import CollectorRegistry

from synapse.config import ServiceConfig
from synapse.metrics import SynapseMetrics
from synapse.model import Report


class Collector:
    """The reconciler's place: keeps every report a watcher sends."""

    def __init__(self) -> None:
        self.reports: list[Report] = []
        self._changed = asyncio.Event()

    def __call__(self, report: Report) -> None:
        self.reports.append(report)
        self._changed.set()

    @property
    def last(self) -> Report | None:
        return self.reports[-1] if self.reports else None

    def hosts(self) -> list[str] | None:
        last = self.last
        if last is None:
            return None
        return sorted(f"{f.registration.host}:{f.registration.port}" for f in last.found)

    async def wait(self, predicate: Callable[[Report], Any], timeout: float = 15.0) -> Report:
        """Until the latest report satisfies ``predicate``."""
        deadline = time.monotonic() + timeout
        while True:
            last = self.last
            if last is not None and predicate(last):
                return last
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no matching report in {timeout}s; last: {self.hosts()}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.5))

    async def wait_hosts(self, hosts: list[str], timeout: float = 15.0) -> Report:
        return await self.wait(
            lambda r: (
                sorted(f"{f.registration.host}:{f.registration.port}" for f in r.found)
                == sorted(hosts)
            ),
            timeout,
        )


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    """A metric's current value (0 when it has no sample yet)."""
    return registry.get_sample_value(name, labels) or 0.0


def metrics() -> SynapseMetrics:
    return SynapseMetrics(CollectorRegistry())


def service_config(discovery: dict[str, Any], **extra: Any) -> ServiceConfig:
    return ServiceConfig.model_validate({"discovery": discovery, **extra})


__all__ = ["Collector", "eventually", "metrics", "sample", "service_config"]
