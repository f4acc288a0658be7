"""The reconciler's logic with the fake applier (the real HAProxy side is tested end to end)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from applier_fakes import FakeApplier, eventually, make_reconciler, report, running
from synapse_testlib import sample

from synapse.config import SynapseConfig
from synapse.reconciler import Reconciler


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


FIRST = (report("db"), report("web", "10.0.0.1"))


def make(tmp_path: Path, applier: FakeApplier, **extra: Any) -> Reconciler:
    return make_reconciler(config(tmp_path, **extra), applier)


async def test_burst_is_coalesced_into_one_apply(tmp_path: Path) -> None:
    applier = FakeApplier()
    rec = make(tmp_path, applier)
    async with running(rec, applier, *FIRST):
        assert len(applier.applied) == 1
        desired, reason = applier.applied[0], applier.reasons[0]
        assert [d.name for d in desired] == ["web"], "haproxy.disabled services are not sent"
        assert "startup" in reason
        # 50 changes in quick succession: far fewer hand-overs than changes.
        for i in range(50):
            rec.report(report("web", *(f"10.0.1.{j}" for j in range(i + 1))))
        await eventually(
            lambda: applier.hosts("web") and len(applier.hosts("web")) == 50, what="the hand-over"
        )
        assert len(applier.applied) <= 3
        # A report that changes nothing causes no hand-over.
        before = len(applier.applied)
        rec.report(report("web", *(f"10.0.1.{j}" for j in range(50))))
        await asyncio.sleep(0.2)
        assert len(applier.applied) == before
        assert sample(rec.metrics.registry, "synapse_watch_to_applied_seconds_count") >= 51


async def test_silent_registry_at_startup_uses_the_state_file(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    stamp = int(time.time())
    state.write_text(json.dumps({"web": {
        "old_10.9.9.9:80": {"timestamp": stamp, "host": "10.9.9.9", "port": 80, "name": "old"},
    }}))  # fmt: skip
    applier = FakeApplier()
    rec = make(tmp_path, applier)
    async with running(rec, applier, report("db")):  # web's registry never answers
        assert applier.hosts("web") == ["10.9.9.9"]
        assert rec.service_status()["web"]["origin"] == "state_file"
        # The registry comes back: its list replaces the cached one.
        rec.report(report("web", "10.0.0.1"))
        await eventually(lambda: applier.hosts("web") == ["10.0.0.1"], what="the hand-over")


async def test_failed_apply_is_retried_with_the_latest_state(tmp_path: Path) -> None:
    applier = FakeApplier(fail_first=2)
    rec = make(tmp_path, applier)
    async with running(rec, applier, *FIRST, timeout=10):
        assert applier.calls == 3
        assert applier.hosts("web") == ["10.0.0.1"]
        assert sample(rec.metrics.registry, "synapse_applies_total", result="error") == 2


async def test_config_reload_keeps_reports_and_drops_removed_services(tmp_path: Path) -> None:
    applier = FakeApplier()
    rec = make(tmp_path, applier)
    async with running(rec, applier, *FIRST):
        new = config(tmp_path)
        new.services["api"] = new.services.pop("db").model_copy()
        new.services["api"].haproxy.disabled = False
        rec.set_config(new)
        await eventually(lambda: len(applier.applied) == 2, what="the hand-over")
        desired, reason = applier.applied[-1], applier.reasons[-1]
        assert reason == "config reload"
        assert {d.name: len(d.servers) for d in desired} == {"web": 1, "api": 1}  # defaults
        rec.report(report("db", "10.0.0.3"))  # late report of a removed service: ignored
        await asyncio.sleep(0.1)
        assert len(applier.applied) == 2


def test_the_desired_list_asks_the_zone_router_only_for_services_that_changed(
    tmp_path: Path,
) -> None:
    doc = config(tmp_path).model_dump(mode="json", by_alias=True, exclude_unset=True)
    doc["services"]["api"] = {"discovery": {"method": "zookeeper", "hosts": ["h:1"], "path": "/a"}}
    rec = make_reconciler(SynapseConfig.model_validate(doc), FakeApplier())
    for first in (report("web", "10.0.0.1"), report("api", "10.0.0.2"), report("db")):
        rec.report(first)
    rec._select_all()
    asked: list[str] = []
    routed = rec.zones.routed
    rec.zones.routed = lambda service: asked.append(service.name) or routed(service)  # type: ignore[method-assign]
    before = rec.desired()
    assert [d.name for d in before] == ["web", "api"] and sorted(asked) == ["api", "web"]
    asked.clear()
    again = rec.desired()
    assert asked == [] and all(a is b for a, b in zip(again, before, strict=True))
    rec.report(report("web", "10.0.0.1", "10.0.0.3"))
    rec._select_all()
    after = rec.desired()
    assert asked == ["web"] and after[1] is before[1] and after[0] is not before[0]
    assert len(after[0].servers) == 2


def test_a_round_selects_only_reported_services_and_those_without_a_report(
    tmp_path: Path, monkeypatch
) -> None:
    import synapse.reconciler as reconciler_module

    doc = config(tmp_path).model_dump(mode="json", by_alias=True, exclude_unset=True)
    for name in ("api", "mail"):
        doc["services"][name] = {
            "discovery": {"method": "zookeeper", "hosts": ["h:1"], "path": f"/{name}"}
        }
    rec = make_reconciler(SynapseConfig.model_validate(doc), FakeApplier())
    for first in (report("web", "10.0.0.1"), report("api", "10.0.0.2"), report("db")):
        rec.report(first)
    rec._select_all()
    selected: list[str] = []
    real = reconciler_module.select_servers
    monkeypatch.setattr(
        reconciler_module,
        "select_servers",
        lambda config, *rest: (
            selected.append(config.haproxy.backend_name or "?") or real(config, *rest)
        ),
    )
    rec.report(report("web", "10.0.0.1", "10.0.0.3"))
    assert rec._select_all({"web"}) == ["web"]
    assert len(selected) == 2  # web, and mail (no report yet: its state file entry ages)
    selected.clear()
    rec._select_all()  # everything (a forced round)
    assert len(selected) == 4
