"""issue 11 (reconciler, the shared fake applier): generator settings a watcher read from
the registry become the service's HAProxy settings under the file's, also when only they
change, survive a config reload, and an invalid merge keeps the file's block."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest
from applier_fakes import FakeApplier
from synapse_testlib import eventually, metrics

from smartstack.record import Registration
from synapse.config import SynapseConfig
from synapse.model import DesiredService, Found, Report
from synapse.reconciler import Reconciler


class Recorder(FakeApplier):
    def web(self) -> DesiredService:
        return next(d for d in self.applied[-1] if d.name == "web")


def config(tmp_path: Path) -> SynapseConfig:
    return SynapseConfig.model_validate({
        "services": {"web": {
            "discovery": {"method": "zookeeper", "hosts": ["h:1"], "path": "/web"},
            "haproxy": {"port": 3300, "server_options": "check"},
        }},
        "haproxy": {"config_file_path": str(tmp_path / "h.cfg"), "reload_command": "true"},
        "startup_wait": 0,
    })  # fmt: skip


def report(settings: dict[str, Any]) -> Report:
    reg = Registration(host="10.0.0.1", port=80, name="a")
    return Report("web", "zookeeper", (Found(reg, "zk:a", 1),), generator_config=settings)


async def test_registry_settings_under_the_file(tmp_path: Path) -> None:
    recorder = Recorder()
    rec = Reconciler(config(tmp_path), recorder, metrics())
    task = asyncio.get_running_loop().create_task(rec.run())
    try:
        rec.report(report({"haproxy": {"port": 1, "backend": ["balance first"]}}))
        await eventually(lambda: recorder.applied and recorder.web().config.haproxy.backend)
        hap = recorder.web().config.haproxy
        assert (hap.port, hap.server_options, hap.backend) == (3300, "check", ["balance first"])

        applied = len(recorder.applied)  # the same servers, other settings: handed over
        rec.report(report({"haproxy": {"backend": ["balance leastconn"]}}))
        await eventually(lambda: recorder.web().config.haproxy.backend == ["balance leastconn"])
        assert len(recorder.applied) > applied

        before = len(recorder.applied)
        rec.set_config(config(tmp_path))  # SIGHUP: the registry's settings stay
        await eventually(lambda: len(recorder.applied) > before, what="the reload's hand-over")
        assert recorder.web().config.haproxy.backend == ["balance leastconn"]

        rec.report(report({"haproxy": {"backend_order": "sideways"}}))  # invalid: the file's
        await eventually(lambda: recorder.web().config.haproxy.backend == [])
        assert recorder.web().config == config(tmp_path).services["web"]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_plain_models_keep_the_current_config_while_a_child_checks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On plain models a child checks the settings (faked: no process in a unit test);
    meanwhile the service keeps its current config, also across a config reload, and no
    hand-over is forced for them; the answer is then handed over."""
    from smartstack import modelbase
    from synapse.config import ServiceConfig
    from synapse.generator_checks import GeneratorChecks

    gate = asyncio.Event()

    async def child(docs: list[dict[str, Any]]) -> list[Any]:
        await gate.wait()
        return [ServiceConfig.model_validate(d) for d in docs]

    monkeypatch.setattr(modelbase, "is_plain", lambda: True)
    recorder = Recorder()
    rec = Reconciler(config(tmp_path), recorder, metrics())
    rec._gen_checks = GeneratorChecks(rec._revisit, check=child)
    task = asyncio.get_running_loop().create_task(rec.run())
    try:
        gate.set()
        rec.report(report({"haproxy": {"backend": ["balance first"]}}))
        await eventually(lambda: recorder.applied and recorder.web().config.haproxy.backend)
        first = rec._services["web"].config

        gate.clear()
        rec.report(report({"haproxy": {"backend": ["balance leastconn"]}}))
        reloaded = config(tmp_path).model_copy(deep=True)
        reloaded.services["web"].haproxy.server_options = "check inter 1s"
        rec.set_config(reloaded)  # SIGHUP while the child checks: the current config stays
        await asyncio.sleep(0.05)
        assert rec._services["web"].config is first and not rec._force
        assert recorder.web().config.haproxy.backend == ["balance first"]

        gate.set()
        await eventually(lambda: recorder.web().config.haproxy.backend == ["balance leastconn"])
        assert recorder.web().config.haproxy.server_options == "check inter 1s"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
