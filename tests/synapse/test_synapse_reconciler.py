"""The reconciler's logic with a recording controller (the real one is tested end to end)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from synapse_testlib import sample

from smartstack.record import Registration
from synapse.config import SynapseConfig
from synapse.metrics import SynapseMetrics
from synapse.model import DesiredService, Found, Report
from synapse.reconciler import Reconciler
from synapse.state_cache import StateCache


class RecordingController:
    def __init__(self, fail_first: int = 0) -> None:
        self.applied: list[tuple[list[DesiredService], str]] = []
        self.fail_first = fail_first
        self.calls = 0
        self.changed = asyncio.Event()

    async def apply(self, desired: list[DesiredService], reason: str) -> None:
        self.calls += 1
        if self.calls <= self.fail_first:
            raise RuntimeError("haproxy said no")
        self.applied.append((desired, reason))
        self.changed.set()

    def status(self) -> dict[str, Any]:
        return {}

    def servers(self, service: str) -> list[str]:
        desired, _ = self.applied[-1]
        return sorted(s.host for d in desired if d.name == service for s in d.servers)


def config(tmp_path: Path, **extra: Any) -> SynapseConfig:
    doc: dict[str, Any] = {
        "services": {
            "web": {"discovery": {"method": "zookeeper", "hosts": ["h:1"], "path": "/web"}},
            "db": {
                "discovery": {"method": "base"},
                "default_servers": [{"name": "d", "host": "127.0.0.5", "port": 5432}],
                "haproxy": {"disabled": True},
            },
        },
        "haproxy": {
            "config_file_path": str(tmp_path / "haproxy.cfg"),
            "reload_command": "true",
            "coalesce_ms": 30,
            "state_file_path": str(tmp_path / "state.json"),
        },
        "startup_wait": 0.3,
    }
    doc.update(extra)
    return SynapseConfig.model_validate(doc)


def report(service: str, *hosts: str, at: float | None = None) -> Report:
    found = tuple(Found(Registration(host=h, port=80, name="n"), f"zk:{h}") for h in hosts)
    return Report(service, "zookeeper", found, 0, at if at is not None else time.monotonic())


async def wait_for(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def running(
    rec: Reconciler, controller: RecordingController, *reports: Report, timeout: float = 5.0
) -> AsyncIterator[None]:
    """Run the reconciler, hand it ``reports`` and wait for its first hand-over."""
    task = asyncio.create_task(rec.run())
    try:
        for item in reports:
            rec.report(item)
        await wait_for(lambda: bool(controller.applied), timeout)
        yield
    finally:
        task.cancel()


FIRST = (report("db"), report("web", "10.0.0.1"))


def make(tmp_path: Path, controller: RecordingController, **extra: Any) -> Reconciler:
    cfg = config(tmp_path, **extra)
    haproxy = cfg.haproxy
    assert haproxy is not None and haproxy.state_file_path
    cache = StateCache(haproxy.state_file_path, haproxy.state_file_ttl)
    cache.load()
    return Reconciler(cfg, controller, SynapseMetrics(CollectorRegistry()), cache)


async def test_burst_is_coalesced_into_one_apply(tmp_path: Path) -> None:
    controller = RecordingController()
    rec = make(tmp_path, controller)
    async with running(rec, controller, *FIRST):
        assert len(controller.applied) == 1
        desired, reason = controller.applied[0]
        assert [d.name for d in desired] == ["web"], "haproxy.disabled services are not sent"
        assert "startup" in reason
        # 50 changes in quick succession: far fewer hand-overs than changes.
        for i in range(50):
            rec.report(report("web", *(f"10.0.1.{j}" for j in range(i + 1))))
        await wait_for(lambda: controller.servers("web") and len(controller.servers("web")) == 50)
        assert len(controller.applied) <= 3
        # A report that changes nothing causes no hand-over.
        before = len(controller.applied)
        rec.report(report("web", *(f"10.0.1.{j}" for j in range(50))))
        await asyncio.sleep(0.2)
        assert len(controller.applied) == before
        assert sample(rec.metrics.registry, "synapse_watch_to_applied_seconds_count") >= 51


async def test_silent_registry_at_startup_uses_the_state_file(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    stamp = int(time.time())
    state.write_text(json.dumps({"web": {
        "old_10.9.9.9:80": {"timestamp": stamp, "host": "10.9.9.9", "port": 80, "name": "old"},
    }}))  # fmt: skip
    controller = RecordingController()
    rec = make(tmp_path, controller)
    async with running(rec, controller, report("db")):  # web's registry never answers
        assert controller.servers("web") == ["10.9.9.9"]
        assert rec.service_status()["web"]["origin"] == "state_file"
        # The registry comes back: its list replaces the cached one.
        rec.report(report("web", "10.0.0.1"))
        await wait_for(lambda: controller.servers("web") == ["10.0.0.1"])


async def test_failed_apply_is_retried_with_the_latest_state(tmp_path: Path) -> None:
    controller = RecordingController(fail_first=2)
    rec = make(tmp_path, controller)
    async with running(rec, controller, *FIRST, timeout=10):
        assert controller.calls == 3
        assert controller.servers("web") == ["10.0.0.1"]
        assert sample(rec.metrics.registry, "synapse_applies_total", result="error") == 2


async def test_config_reload_keeps_reports_and_drops_removed_services(tmp_path: Path) -> None:
    controller = RecordingController()
    rec = make(tmp_path, controller)
    async with running(rec, controller, *FIRST):
        new = config(tmp_path)
        new.services["api"] = new.services.pop("db").model_copy()
        new.services["api"].haproxy.disabled = False
        rec.set_config(new)
        await wait_for(lambda: len(controller.applied) == 2)
        desired, reason = controller.applied[-1]
        assert reason == "config reload"
        assert {d.name: len(d.servers) for d in desired} == {"web": 1, "api": 1}  # defaults
        rec.report(report("db", "10.0.0.3"))  # late report of a removed service: ignored
        await asyncio.sleep(0.1)
        assert len(controller.applied) == 2
