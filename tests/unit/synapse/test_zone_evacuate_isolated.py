"""An evacuation while some service is isolated (synapse/zone_apply.py ``refusal``).

Isolation reports every runtime-only apply as INVALID while any service is isolated
(``isolation.outcome``, what the reconciler's metrics and /status read). Its weights went
through all the same: the evacuation is refused only when a service it moves is the
isolated one. Pure: the fake applier, no process, no socket.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from applier_fakes import FakeApplier, make_reconciler, running

from synapse.contract import ApplyOutcome, ApplyResult
from synapse.state_cache import StateCache
from synapse.zone_apply import evacuation_applier, refusal
from synapse.zone_state import Evacuations

from test_zone_apply import config, fleet_report, round_after, zone_total  # isort: skip

# What the controller answers while "plain" (not zone-routed) is isolated: the runtime
# commands ran, nothing else needed a reload.
OTHERS_ISOLATED = ApplyResult(
    ("set weight web/az1-0_10.0.0.1:80 0",), ApplyOutcome.INVALID, error="x", isolated=("plain",)
)


@pytest.mark.parametrize(
    ("result", "moved", "refused"),
    [
        (ApplyResult(), {"web"}, None),
        (ApplyResult(reload=ApplyOutcome.PENDING), {"web"}, None),
        (OTHERS_ISOLATED, {"web"}, None),
        (OTHERS_ISOLATED, set(), None),
        (OTHERS_ISOLATED, {"web", "plain"}, "the new weights: plain isolated"),
        (ApplyResult(reload=ApplyOutcome.INVALID), {"web"}, "the new weights (invalid)"),
        (ApplyResult(reload=ApplyOutcome.FAILED), {"web"}, "the new weights (failed)"),
    ],
)
def test_only_a_refusal_of_the_moved_services_refuses(result, moved, refused) -> None:
    why = refusal(result, moved)
    assert (why is None) is (refused is None), why
    assert refused is None or refused in why


async def test_evacuation_goes_through_while_another_service_is_isolated(tmp_path: Path):
    applier = FakeApplier()
    rec = make_reconciler(config(tmp_path), applier)
    async with running(rec, applier, fleet_report(), fleet_report("plain", az9=1)):
        applier.result = OTHERS_ISOLATED
        apply = evacuation_applier(rec, applier, lambda: rec.state_cache)
        answer, persisted = await apply(Evacuations().evacuate("az1"))
        assert persisted and answer["web"]["evacuated"] == ["az1"]
        assert rec.zones.evacuations == Evacuations().evacuate("az1")
        assert zone_total(applier.applied[-1], "az1") == 0
        cache = StateCache(tmp_path / "state.json", 60)
        cache.load()
        assert cache.evacuations == Evacuations().evacuate("az1")
        await apply(Evacuations())  # the restore too
        assert rec.zones.evacuations == Evacuations()


async def test_evacuation_of_an_isolated_service_is_refused(tmp_path: Path) -> None:
    applier = FakeApplier()
    rec = make_reconciler(config(tmp_path), applier)
    async with running(rec, applier, fleet_report(), fleet_report("plain", az9=1)):
        applier.result = ApplyResult(reload=ApplyOutcome.INVALID, isolated=("plain", "web"))
        apply = evacuation_applier(rec, applier, lambda: rec.state_cache)
        count = len(applier.applied)
        with pytest.raises(RuntimeError, match="the new weights: web isolated"):
            await apply(Evacuations().evacuate("az1", "web"))
        assert rec.zones.evacuations == Evacuations(), "nothing changed"
        await round_after(applier, count + 1)
        assert zone_total(applier.applied[-1], "az1") == 512, "the old weights are re-sent"
