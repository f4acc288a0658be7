"""The one fake of the HAProxy side (``synapse.contract.Applier``) and the helpers of the
reconciler tests: reports, waiting (``eventually``, shared by the synapse tests), running
a reconciler. Pure logic: no process, no socket."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from prometheus_client import CollectorRegistry

from smartstack.record import Registration
from synapse.change_gate import ChangeGate
from synapse.config import HAProxyConfig, SynapseConfig
from synapse.contract import Applier, ApplyResult
from synapse.daemon_parts import make_state_cache
from synapse.metrics import SynapseMetrics
from synapse.model import DesiredService, Found, Report
from synapse.reconciler import Reconciler


class FakeApplier:
    """Records every hand-over. ``fail_first``: that many applies raise. While ``gate`` is
    clear, apply() waits after setting ``entered`` (an apply under way)."""

    def __init__(self, fail_first: int = 0) -> None:
        self.applied: list[list[DesiredService]] = []  # the desired state of each apply
        self.reasons: list[str] = []
        self.fail_first = fail_first
        self.calls = 0
        self.gate = asyncio.Event()
        self.gate.set()
        self.entered = asyncio.Event()
        self.started = self.stopped = False
        self.configs: list[HAProxyConfig] = []  # update_config() calls
        self.result = ApplyResult()  # what every apply returns
        self.change_gate = ChangeGate()  # (the reconciler takes it: ``Reconciler.applier``)

    async def start(self) -> None:
        self.started = True

    async def apply(self, desired: list[DesiredService], reason: str) -> ApplyResult:
        self.calls += 1
        self.entered.set()
        await self.gate.wait()
        if self.calls <= self.fail_first:
            raise RuntimeError("haproxy said no")
        self.applied.append(desired)
        self.reasons.append(reason)
        return self.result

    async def update_config(self, config: HAProxyConfig) -> None:
        self.configs.append(config)

    async def flush(self, timeout: float = 60.0) -> None:
        return None

    async def stop(self) -> None:
        self.stopped = True

    def status(self) -> dict[str, Any]:
        return {}

    def health(self) -> list[str]:
        return []

    async def backend_servers(self, backend: str) -> dict[str, str] | None:
        return (await self.servers_of([backend]))[backend]

    async def servers_of(self, backends: Sequence[str]) -> dict[str, dict[str, str] | None]:
        return dict.fromkeys(backends)

    def hosts(self, service: str, index: int = -1) -> list[str]:
        """The hosts ``service`` had in hand-over ``index`` (the last by default)."""
        return sorted(s.host for d in self.applied[index] if d.name == service for s in d.servers)


_: type[Applier] = FakeApplier  # the fake implements the whole contract


def report(service: str, *hosts: str, at: float | None = None) -> Report:
    """A zookeeper watcher's report of ``hosts`` (port 80)."""
    found = tuple(Found(Registration(host=h, port=80, name="n"), f"zk:{h}") for h in hosts)
    return Report(service, "zookeeper", found, 0, at if at is not None else time.monotonic())


async def eventually(predicate: Callable[[], Any], timeout: float = 15.0, what: str = "") -> Any:
    """Poll ``predicate`` until it is truthy; its value (AssertionError after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        await asyncio.sleep(0.02)


def make_reconciler(config: SynapseConfig, applier: FakeApplier) -> Reconciler:
    """A reconciler with ``applier`` and the config's state file (loaded), if it has one."""
    return Reconciler(
        config, applier, SynapseMetrics(CollectorRegistry()), make_state_cache(config)
    )


@contextlib.asynccontextmanager
async def running(
    rec: Reconciler, applier: FakeApplier, *reports: Report, timeout: float = 10.0
) -> AsyncIterator[asyncio.Task[None]]:
    """Run the reconciler, hand it ``reports`` and wait for its first hand-over."""
    task = asyncio.create_task(rec.run())
    try:
        for item in reports:
            rec.report(item)
        await eventually(lambda: applier.applied, timeout, "the first hand-over")
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
