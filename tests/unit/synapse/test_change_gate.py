"""synapse.change_gate: background steps wait while a change is on its way, boundedly."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from pathlib import Path

import pytest
from applier_fakes import FakeApplier, eventually, make_reconciler, report, running

import synapse.change_gate as change_gate
import synapse.reconciler as reconciler_mod
from synapse.change_gate import ChangeGate
from synapse.config import SynapseConfig


async def test_an_idle_gate_lets_a_step_go_without_a_turn_of_the_loop() -> None:
    gate, ran = ChangeGate(), []
    asyncio.get_running_loop().call_soon(ran.append, "other")
    await gate.turn()
    assert ran == [] and gate.waits == 0, "no turn of the loop spent"


async def test_a_step_waits_until_the_change_is_handed_over() -> None:
    gate = ChangeGate()
    gate.change()
    step = asyncio.create_task(gate.turn())
    await asyncio.sleep(0.01)
    assert not step.done() and gate.busy
    gate.done()
    await asyncio.wait_for(step, 1)
    assert gate.waits == 1 and not gate.busy


async def test_a_stream_of_changes_cannot_starve_a_step(monkeypatch) -> None:
    monkeypatch.setattr(change_gate, "MAX_WAIT", 0.02)
    gate = ChangeGate()
    gate.change()  # and never done
    began = time.monotonic()
    await gate.turn()
    assert 0.015 <= time.monotonic() - began < 1.0


async def test_the_reconciler_holds_the_gate_from_a_report_to_the_end_of_its_round(
    tmp_path: Path,
) -> None:
    config = SynapseConfig.model_validate(
        {
            "services": {
                "web": {"discovery": {"method": "zookeeper", "hosts": ["h:1"], "path": "/w"}}
            },
            "haproxy": {
                "config_file_path": str(tmp_path / "haproxy.cfg"),
                "reload_command": "true",
                "state_file_path": str(tmp_path / "state.json"),
            },
            "startup_wait": 0.3,
        }
    )
    applier = FakeApplier()
    rec = make_reconciler(config, applier)
    async with running(rec, applier, report("web", "10.0.0.1")):
        await eventually(lambda: applier.calls == 1 and not rec.change_gate.busy)
        applier.gate.clear()  # the next apply stays under way
        applier.entered.clear()
        rec.report(report("web", "10.0.0.2"))
        assert rec.change_gate.busy, "from the report on"
        await asyncio.wait_for(applier.entered.wait(), 5)
        assert rec.change_gate.busy, "while the round hands it over"
        assert not gc.isenabled(), "no cycle collection inside a round"
        applier.gate.set()
        await eventually(lambda: not rec.change_gate.busy, what="idle after the round")
        assert applier.calls == 2 and gc.isenabled()


def test_the_collector_is_held_off_a_round_unless_someone_else_holds_it() -> None:
    assert gc.isenabled()
    with change_gate.collector_held():
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()  # (gc_start around the first hand-over)
    try:
        with change_gate.collector_held():
            assert not gc.isenabled()
        assert not gc.isenabled(), "theirs to turn on"
    finally:
        gc.enable()


def two_services(tmp_path: Path, startup_wait: float = 0.1) -> SynapseConfig:
    zk = {"method": "zookeeper", "hosts": ["h:1"]}
    return SynapseConfig.model_validate(
        {
            "services": {
                "web": {"discovery": {**zk, "path": "/w"}},
                "api": {"discovery": {**zk, "path": "/a"}},
            },
            "haproxy": {
                "config_file_path": str(tmp_path / "haproxy.cfg"),
                "reload_command": "true",
                "state_file_path": str(tmp_path / "state.json"),
            },
            "startup_wait": startup_wait,
        }
    )


async def test_the_gate_is_idle_through_the_backoff_after_a_failed_round(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reconciler_mod, "RETRY_BASE", 0.6)
    monkeypatch.setattr(reconciler_mod, "RETRY_CAP", 0.6)
    applier = FakeApplier(fail_first=1)
    rec = make_reconciler(two_services(tmp_path), applier)
    applier.gate.clear()
    task = asyncio.create_task(rec.run())
    try:
        rec.report(report("web", "10.0.0.1"))
        rec.report(report("api", "10.0.0.3"))
        await asyncio.wait_for(applier.entered.wait(), 5)  # the first round: it fails
        rec.report(report("web", "10.0.0.2"))  # a report during the failing round
        applier.gate.set()
        await eventually(lambda: rec.last_error is not None)
        assert not rec.change_gate.busy, "nothing can be applied during the backoff"
        rec.report(report("web", "10.0.0.4"))  # nor a report during it
        assert not rec.change_gate.busy
        await eventually(lambda: applier.calls == 2 and not rec.change_gate.busy)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_reports_before_the_start_leave_the_gate_idle(tmp_path: Path) -> None:
    applier = FakeApplier()
    rec = make_reconciler(two_services(tmp_path, startup_wait=5.0), applier)
    task = asyncio.create_task(rec.run())
    try:
        rec.report(report("web", "10.0.0.1"))  # api never reports: the startup wait runs
        await asyncio.sleep(0.05)
        assert not rec.started and not rec.change_gate.busy, "the first round hands all over"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_one_job_waits_max_wait_in_all_under_a_stream(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(change_gate, "MAX_WAIT", 0.05)
    gate = ChangeGate()
    gate.change()  # a stream: busy all along
    turns = gate.job()
    began = time.monotonic()
    await turns()
    first = time.monotonic() - began
    for _ in range(20):  # the job's other steps: at once
        await turns()
    assert first >= 0.04 and time.monotonic() - began < 0.3
    assert gate.waits == 1 and turns.left <= 0
    gate.done()
    gate.change()
    began = time.monotonic()
    await gate.job()()  # the next job waits again
    assert time.monotonic() - began >= 0.04
