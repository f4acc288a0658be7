"""The cycle collector during the start (``synapse.gc_start``): few collections until the first
hand-over, then the process's thresholds; around the first hand-over what the start
built is frozen before the first apply, the collector is off during it, what the apply
built is frozen after it, and later applies run with the collector on and freeze nothing."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest
from applier_fakes import FakeApplier, eventually, make_reconciler, report, running

from synapse import gc_start
from synapse.config import SynapseConfig
from synapse.contract import ApplyResult
from synapse.model import DesiredService


def tracked(obj: object) -> bool:
    """Whether the collector would walk ``obj`` (frozen objects are not listed)."""
    return any(o is obj for o in gc.get_objects())


class GcRecordingApplier(FakeApplier):
    """Records, per apply: collector on?, start sentinel tracked?, last apply's object tracked?"""

    def __init__(self, before_start: object) -> None:
        super().__init__()
        self.before_start = before_start
        self.seen: list[tuple[bool, bool, bool]] = []
        self.made_in_apply: list[object] = [object()]  # (no apply yet: a placeholder)

    async def apply(self, desired: list[DesiredService], reason: str) -> ApplyResult:
        previous = self.made_in_apply[-1]
        self.seen.append((gc.isenabled(), tracked(self.before_start), tracked(previous)))
        self.made_in_apply.append([reason])  # a container the collector tracks
        return await super().apply(desired, reason)


async def test_the_start_is_frozen_around_the_first_apply_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = SynapseConfig.model_validate({
        "services": {"web": {"discovery": {"method": "zookeeper", "hosts": ["h:1"],
                                           "path": "/web"}}},
        "haproxy": {"config_file_path": str(tmp_path / "haproxy.cfg"), "reload_command": "true",
                    "state_file_path": str(tmp_path / "state.json")},
    })  # fmt: skip
    monkeypatch.setattr(gc_start, "_done", False)  # (an earlier test's reconciler did it)
    monkeypatch.setattr(gc_start, "_settled", False)
    monkeypatch.setattr(gc_start, "_saved", None)
    assert gc.isenabled()
    sentinel: list[str] = ["built by the start"]
    applier = GcRecordingApplier(sentinel)
    try:
        rec = make_reconciler(config, applier)
        assert tracked(sentinel)
        async with running(rec, applier, report("web", "10.0.0.1")):
            assert gc.isenabled()  # on again after the first apply
            rec.report(report("web", "10.0.0.2"))
            await eventually(lambda: len(applier.seen) == 2, what="the second apply")
            rec.report(report("web", "10.0.0.3"))
            await eventually(lambda: len(applier.seen) == 3, what="the third apply")
        first, second, third = applier.seen
        assert first[:2] == (False, False)  # off during the first apply; the start frozen
        # Off during every round (change_gate.collector_held), on between them; the first
        # apply's objects frozen too, and nothing frozen after the first apply.
        assert second == (False, False, False)
        assert third == (False, False, True)
    finally:
        gc.unfreeze()
    assert gc.isenabled() and tracked(sentinel)


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    before = gc.get_threshold()
    monkeypatch.setattr(gc_start, "_saved", None)
    monkeypatch.setattr(gc_start, "_settled", False)
    monkeypatch.setattr(gc, "freeze", lambda: None)  # the test process's heap stays as is
    gc.set_threshold(700, 10, 10)
    yield
    gc.set_threshold(*before)


def test_relaxed_until_settled_then_the_thresholds_come_back(fresh: None) -> None:
    gc_start.relax()
    assert gc.get_threshold()[0] == gc_start.START_GEN0
    gc_start.relax()  # a second call does not save the relaxed thresholds as the process's
    gc_start.settle()
    assert gc.get_threshold() == (700, 10, 10)
    gc.set_threshold(500, 5, 5)  # settled once: later calls change nothing
    gc_start.settle()
    gc_start.relax()
    assert gc.get_threshold() == (500, 5, 5)
