"""The reconciler's rounds with the fake applier: leading-edge coalescing, work only
for the services that reported, and a state file written at most once a second."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from pathlib import Path
from typing import Any

from applier_fakes import FakeApplier, eventually, make_reconciler, report, running

from synapse.config import SynapseConfig
from synapse.contract import ApplyOutcome, ApplyResult
from synapse.reconciler import Reconciler


def make(tmp_path: Path, applier: FakeApplier) -> Reconciler:
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
    return make_reconciler(config, applier)


FIRST = tuple(report(name, "10.0.0.1") for name in ("web", "api", "db"))


async def test_changes_during_an_apply_are_handed_over_together_right_after(tmp_path: Path):
    applier = FakeApplier()
    rec = make(tmp_path, applier)
    async with running(rec, applier, *FIRST):
        applier.gate.clear()
        applier.entered.clear()
        rec.report(report("web", "10.0.0.2"))
        await applier.entered.wait()  # the change went to HAProxy at once: no window
        for hosts in (["10.0.0.3"], ["10.0.0.3", "10.0.0.4"]):
            rec.report(report("web", *hosts))
        rec.report(report("api", "10.0.9.9"))
        await asyncio.sleep(0.05)
        assert len(applier.applied) == 1  # still in the second apply
        applier.gate.set()
        await eventually(lambda: len(applier.applied) == 3, what="the collected changes")
        await asyncio.sleep(0.05)
        assert len(applier.applied) == 3  # all of them in one more hand-over
        assert applier.hosts("web") == ["10.0.0.3", "10.0.0.4"]
        assert applier.hosts("api") == ["10.0.9.9"]


async def test_unchanged_services_are_handed_over_as_the_same_objects(tmp_path: Path):
    applier = FakeApplier()
    rec = make(tmp_path, applier)
    async with running(rec, applier, *FIRST):
        before = {d.name: d for d in applier.applied[-1]}
        selection = rec.selections()["db"]
        rec.report(report("web", "10.0.0.7"))
        await eventually(lambda: len(applier.applied) == 2, what="the hand-over")
        after = {d.name: d for d in applier.applied[-1]}
        assert after["web"] is not before["web"] and applier.hosts("web") == ["10.0.0.7"]
        assert after["api"] is before["api"] and after["db"] is before["db"]
        assert rec.selections()["db"] is selection  # not even selected again
        rec.report(report("web", "10.0.0.7"))  # a report that changes nothing
        await asyncio.sleep(0.05)
        assert len(applier.applied) == 2


async def test_the_state_file_follows_at_most_once_a_second_and_on_the_way_out(tmp_path: Path):
    applier = FakeApplier()
    rec = make(tmp_path, applier)
    assert rec.state_cache is not None
    calls: list[float] = []
    update = rec.state_cache.update

    def counted(*args: Any) -> bool:
        calls.append(time.monotonic())
        return update(*args)

    rec.state_cache.update = counted  # type: ignore[method-assign]
    state = tmp_path / "state.json"
    async with running(rec, applier, *FIRST):
        for i in range(30):
            rec.report(report("web", f"10.0.1.{i}"))
            await eventually(lambda i=i: applier.hosts("web") == [f"10.0.1.{i}"], what="hand-over")
        # 30 changes handed over one by one; the state file (every server) much less often.
        assert len(calls) < 30
        assert all(later - earlier >= 0.9 for earlier, later in itertools.pairwise(calls))
    # Stopped (cancelled): what was still to be written is in the file.
    # (servers that left stay in the file, marked, for state_file_ttl: issue 11)
    entries = json.loads(state.read_text())["web"].values()
    assert {entry["host"] for entry in entries if not entry.get("left")} == {"10.0.1.29"}


async def test_each_change_applied_at_runtime_is_traced_from_its_event_to_haproxys_answer(
    tmp_path: Path,
):
    applier = FakeApplier()
    rec = make(tmp_path, applier)
    async with running(rec, applier, *FIRST):
        applier.result = ApplyResult(("set server web/x state ready",), acked_at=1000.5)
        rec.report(report("web", "10.0.0.2", at=1000.25))
        await eventually(lambda: len(applier.applied) == 2, what="the hand-over")
        assert list(rec.changes) == [(1000.25, 1000.5)]
        # Not applied at runtime (a reload waits): no span of synapse's own part.
        applier.result = ApplyResult(reload=ApplyOutcome.PENDING, acked_at=1001.5)
        rec.report(report("web", "10.0.0.3", at=1001.0))
        await eventually(lambda: len(applier.applied) == 3, what="the hand-over")
        assert list(rec.changes) == [(1000.25, 1000.5)]


async def test_a_stream_of_reports_is_paced_and_a_lone_change_is_not(tmp_path: Path):
    applier = FakeApplier()
    rec = make(tmp_path, applier)
    async with running(rec, applier, *FIRST):
        await asyncio.sleep(0.02)
        applier.gate.clear()
        applier.entered.clear()
        rec.report(report("web", "10.0.0.2"))
        await applier.entered.wait()  # a lone change: handed over at once
        assert rec.pacer.paced == 0
        rec.report(report("api", "10.0.9.8"))  # two reports close together while that
        rec.report(report("api", "10.0.9.9"))  # round runs: a stream
        applier.gate.set()
        await eventually(lambda: len(applier.applied) == 3, what="the paced round")
        assert rec.pacer.paced == 1 and applier.hosts("api") == ["10.0.9.9"]
        await asyncio.sleep(0.02)  # quiet again: the next lone change waits for nothing
        rec.report(report("db", "10.0.0.5"))
        await eventually(lambda: len(applier.applied) == 4, what="the lone change")
        assert rec.pacer.paced == 1
