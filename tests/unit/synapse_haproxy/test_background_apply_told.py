"""The controller's own applies (the pending reload, a retry, the sweep, a restart) are told
to ``on_applied`` too: the reconciler's ``after_apply`` hears its own only, and the last good
copy of a SIGHUP whose reload waited for restart_interval stayed pending (review s39
lastgood3; synapse.last_good_run)."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from synapse.config import SynapseConfig
from synapse.contract import ApplyOutcome, ApplyResult
from synapse.daemon_parts import make_controller
from synapse.haproxy.controller import HAProxyController
from synapse.haproxy.ops import Reload


def managed_controller(tmp_path: Path) -> HAProxyController:
    haproxy = {"config_file_path": str(tmp_path / "haproxy.cfg"), "managed": {}}
    config = SynapseConfig.model_validate({"services": {}, "haproxy": haproxy})
    controller = make_controller(config, CollectorRegistry())
    assert isinstance(controller, HAProxyController)
    return controller


async def test_the_pending_reloads_apply_is_told(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    controller = managed_controller(tmp_path)
    done = ApplyResult(reload=ApplyOutcome.DONE)

    async def isolated(apply: object, desired: object, settings: object) -> ApplyResult:
        return done  # (what HAProxy did: the reload ran)

    monkeypatch.setattr(controller._isolation, "apply", isolated)
    heard: list[ApplyResult] = []
    controller.on_applied = heard.append
    controller._pending.wait_for_turn(Reload((("restart_interval", "a change waits"),)))
    await controller._pending.done()  # (the gate: due at once, nothing ran before)
    assert heard == [done]


async def test_a_listener_that_raises_does_not_fail_the_apply(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The apply has run in HAProxy by then: a listener's bug is logged, the result stands
    (review s39 cr-lastgood3 LOW: it failed the reconciler's apply, skipping after_apply)."""
    controller = managed_controller(tmp_path)
    done = ApplyResult(reload=ApplyOutcome.DONE)

    def broken(result: ApplyResult) -> None:
        raise RuntimeError("a bug in a listener")

    controller.on_applied = broken
    assert controller._told(done) is done
    assert "a listener of the apply's end failed" in caplog.text
