"""One change gate (synapse.change_gate) for the reconciler and every background job on
the HAProxy side: the reports hold back the sweep, the state dump and an owed render."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

import synapse.change_gate as change_gate
from synapse.change_gate import ChangeGate
from synapse.config import SynapseConfig
from synapse.daemon_parts import make_controller
from synapse.haproxy import owed
from synapse.haproxy.controller import HAProxyController
from synapse.haproxy.owed import OwedRender
from synapse.metrics import SynapseMetrics
from synapse.reconciler import Reconciler


def test_the_daemons_reconciler_shares_the_controllers_gate_with_its_jobs(tmp_path: Path) -> None:
    config = SynapseConfig.model_validate(
        {
            "services": {
                "web": {"discovery": {"method": "zookeeper", "hosts": ["h:1"], "path": "/w"}}
            },
            "haproxy": {"config_file_path": str(tmp_path / "haproxy.cfg"), "managed": {}},
        }
    )
    registry = CollectorRegistry()
    rec = Reconciler(config, None, SynapseMetrics(registry))  # (as the daemon builds them)
    controller = rec.applier = make_controller(config, registry)
    assert isinstance(controller, HAProxyController)
    gate = controller.change_gate
    dumper = controller._dumper
    assert dumper is not None, "managed mode dumps the server state"
    assert rec.change_gate is gate
    assert controller._reader.change_gate is gate and dumper.change_gate is gate
    assert controller._owed._gate is gate


async def test_an_owed_render_waits_while_a_change_is_on_its_way(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(owed, "WINDOW", 0.0)
    monkeypatch.setattr(change_gate, "MAX_WAIT", 5.0)
    paid: list[bool] = []

    async def apply() -> None:
        paid.append(True)

    gate = ChangeGate()
    render = OwedRender(asyncio.Lock(), apply, gate)
    render.owed = True
    gate.change()
    later = asyncio.create_task(render._later())
    await asyncio.sleep(0.05)
    assert not paid, "the change goes first"
    gate.done()
    await asyncio.wait_for(later, 5)
    assert paid == [True] and render.paid_later == 1
