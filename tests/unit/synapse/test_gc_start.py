"""The cycle collector around the first hand-over (``synapse.gc_start``): what the start
built is frozen before the first apply, the collector is off during it, what the apply
built is frozen after it, and later applies run with the collector on and freeze nothing."""

from __future__ import annotations

import gc
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
        assert second == (True, False, False)  # on; the first apply's objects frozen too
        assert third == (True, False, True)  # nothing frozen after the first apply
    finally:
        gc.unfreeze()
    assert gc.isenabled() and tracked(sentinel)
