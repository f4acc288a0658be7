"""The reconciler's rounds with a recording controller: leading-edge coalescing, work only
for the services that reported, and a state file written at most once a second."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from smartstack.record import Registration
from synapse.config import SynapseConfig
from synapse.metrics import SynapseMetrics
from synapse.model import DesiredService
from synapse.reconciler import Reconciler
from synapse.state_cache import StateCache
from synapse.watchers.base import Found, Report


class GatedController:
    """Records hand-overs; while ``gate`` is clear, apply() waits (an apply under way)."""

    def __init__(self) -> None:
        self.applied: list[list[DesiredService]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.entered = asyncio.Event()

    async def apply(self, desired: list[DesiredService], reason: str) -> None:
        self.entered.set()
        await self.gate.wait()
        self.applied.append(desired)

    def status(self) -> dict[str, Any]:
        return {}

    def hosts(self, service: str, index: int = -1) -> list[str]:
        return sorted(s.host for d in self.applied[index] if d.name == service for s in d.servers)


def make(tmp_path: Path, controller: GatedController) -> Reconciler:
    services = {
        name: {"discovery": {"method": "zookeeper", "hosts": ["h:1"], "path": f"/{name}"}}
        for name in ("web", "api", "db")
    }
    config = SynapseConfig.model_validate({
        "services": services,
        "haproxy": {"config_file_path": str(tmp_path / "haproxy.cfg"), "reload_command": "true",
                    "state_file_path": str(tmp_path / "state.json")},
        "startup_wait": 5,
    })  # fmt: skip
    assert config.haproxy is not None and config.haproxy.coalesce_ms == 0  # the default
    cache = StateCache(tmp_path / "state.json", 86400)
    cache.load()
    return Reconciler(config, controller, SynapseMetrics(CollectorRegistry()), cache)


def report(service: str, *hosts: str) -> Report:
    found = tuple(Found(Registration(host=h, port=80, name="n"), f"zk:{h}") for h in hosts)
    return Report(service, "zookeeper", found, 0, time.monotonic())


async def until(predicate, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


@contextlib.asynccontextmanager
async def running(rec: Reconciler, controller: GatedController) -> AsyncIterator[asyncio.Task]:
    task = asyncio.create_task(rec.run())
    try:
        for name in ("web", "api", "db"):
            rec.report(report(name, "10.0.0.1"))
        await until(lambda: len(controller.applied) == 1, "the first hand-over")
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_changes_during_an_apply_are_handed_over_together_right_after(tmp_path: Path):
    controller = GatedController()
    rec = make(tmp_path, controller)
    async with running(rec, controller):
        controller.gate.clear()
        controller.entered.clear()
        rec.report(report("web", "10.0.0.2"))
        await controller.entered.wait()  # the change went to HAProxy at once: no window
        for hosts in (["10.0.0.3"], ["10.0.0.3", "10.0.0.4"]):
            rec.report(report("web", *hosts))
        rec.report(report("api", "10.0.9.9"))
        await asyncio.sleep(0.05)
        assert len(controller.applied) == 1  # still in the second apply
        controller.gate.set()
        await until(lambda: len(controller.applied) == 3, "the collected changes")
        await asyncio.sleep(0.05)
        assert len(controller.applied) == 3  # all of them in one more hand-over
        assert controller.hosts("web") == ["10.0.0.3", "10.0.0.4"]
        assert controller.hosts("api") == ["10.0.9.9"]


async def test_unchanged_services_are_handed_over_as_the_same_objects(tmp_path: Path):
    controller = GatedController()
    rec = make(tmp_path, controller)
    async with running(rec, controller):
        before = {d.name: d for d in controller.applied[-1]}
        selection = rec.selections()["db"]
        rec.report(report("web", "10.0.0.7"))
        await until(lambda: len(controller.applied) == 2, "the hand-over")
        after = {d.name: d for d in controller.applied[-1]}
        assert after["web"] is not before["web"] and controller.hosts("web") == ["10.0.0.7"]
        assert after["api"] is before["api"] and after["db"] is before["db"]
        assert rec.selections()["db"] is selection  # not even selected again
        rec.report(report("web", "10.0.0.7"))  # a report that changes nothing
        await asyncio.sleep(0.05)
        assert len(controller.applied) == 2


async def test_the_state_file_follows_at_most_once_a_second_and_on_the_way_out(tmp_path: Path):
    controller = GatedController()
    rec = make(tmp_path, controller)
    assert rec.state_cache is not None
    calls: list[float] = []
    update = rec.state_cache.update

    def counted(*args: Any) -> bool:
        calls.append(time.monotonic())
        return update(*args)

    rec.state_cache.update = counted  # type: ignore[method-assign]
    state = tmp_path / "state.json"
    async with running(rec, controller):
        for i in range(30):
            rec.report(report("web", f"10.0.1.{i}"))
            await until(lambda i=i: controller.hosts("web") == [f"10.0.1.{i}"], "hand-over")
        # 30 changes handed over one by one; the state file (every server) much less often.
        assert len(calls) < 30
        assert all(later - earlier >= 0.9 for earlier, later in itertools.pairwise(calls))
    # Stopped (cancelled): what was still to be written is in the file.
    # (servers that left stay in the file, marked, for state_file_ttl: issue 11)
    entries = json.loads(state.read_text())["web"].values()
    assert {entry["host"] for entry in entries if not entry.get("left")} == {"10.0.1.29"}
