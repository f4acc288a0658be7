"""A reloaded config (SIGHUP) costs what changed: the reconciler keeps unchanged services."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
from applier_fakes import FakeApplier, eventually, make_reconciler, report, running

from synapse.config import SynapseConfig


def config(tmp_path: Path, web_hosts: list[str], **services: Any) -> SynapseConfig:
    base = {"method": "base"}
    doc: dict[str, Any] = {
        "services": {
            "web": {
                "discovery": {"method": "zookeeper", "hosts": ["h:1"], "path": "/web"},
                "haproxy": {"routes": {"hosts": web_hosts}},
            },
            "api": {
                "discovery": base,
                "default_servers": [{"name": "a", "host": "127.0.0.5", "port": 81}],
                "haproxy": {"routes": {"hosts": ["api.example.com"]}},
            },
            **services,
        },
        "haproxy": {
            "config_file_path": str(tmp_path / "haproxy.cfg"),
            "reload_command": "true",
            "shared_frontend": ["bind :80", "mode http"],
            "state_file_path": str(tmp_path / "state.json"),
        },
        "startup_wait": 0.3,
    }
    return SynapseConfig.model_validate(doc)


def by_name(desired: list[Any]) -> dict[str, Any]:
    return {d.name: d for d in desired}


async def test_a_config_reloaded_during_an_apply_is_handed_over_after_it(tmp_path: Path) -> None:
    applier = FakeApplier()
    rec = make_reconciler(config(tmp_path, ["a.example.com"]), applier)
    async with running(rec, applier, report("web", "10.0.0.1"), report("api")):
        applier.gate.clear()
        applier.entered.clear()
        rec.report(report("web", "10.0.0.2"))
        await asyncio.wait_for(applier.entered.wait(), 5)  # an apply is under way
        rec.set_config(config(tmp_path, ["a.example.com", "b.example.com"]))
        applier.gate.set()
        await eventually(
            lambda: (
                by_name(applier.applied[-1])["web"].config.haproxy.routes.hosts
                == ["a.example.com", "b.example.com"]
            ),
            what="the reloaded config's hand-over",
        )


async def test_unchanged_services_keep_their_desired_objects(tmp_path: Path) -> None:
    applier = FakeApplier()
    first = config(tmp_path, ["a.example.com"])
    rec = make_reconciler(first, applier)
    async with running(rec, applier, report("web", "10.0.0.1"), report("api")):
        before = by_name(applier.applied[-1])
        new = config(tmp_path, ["a.example.com", "b.example.com"])
        new.services["api"] = first.services["api"]  # what the config cache gives back
        rec.set_config(new)
        await eventually(lambda: len(applier.applied) == 2, what="the hand-over")
        after = by_name(applier.applied[-1])
        assert after["api"] is before["api"], "an unchanged service is the same object"
        assert after["web"] is not before["web"]
        assert after["web"].config.haproxy.routes.hosts == ["a.example.com", "b.example.com"]
        assert [s.host for s in after["web"].servers] == ["10.0.0.1"], "its report is kept"
        # An equal (not identical) service config is unchanged too.
        rec.set_config(config(tmp_path, ["a.example.com", "b.example.com"]))
        await eventually(lambda: len(applier.applied) == 3, what="the hand-over")
        again = by_name(applier.applied[-1])
        assert again["web"] is after["web"] and again["api"] is after["api"]


async def test_a_changed_default_servers_list_is_selected_again(tmp_path: Path) -> None:
    applier = FakeApplier()
    rec = make_reconciler(config(tmp_path, ["a.example.com"]), applier)
    async with running(rec, applier, report("web", "10.0.0.1"), report("api")):
        new = config(tmp_path, ["a.example.com"])
        new.services["api"].default_servers[0].port = 82
        rec.set_config(new)
        await eventually(lambda: len(applier.applied) == 2, what="the hand-over")
        assert [s.port for s in by_name(applier.applied[-1])["api"].servers] == [82]


class Sink:
    """A file_output stand-in: the services each update() was told are enabled."""

    def __init__(self) -> None:
        self.enabled: list[list[str]] = []

    def update(self, selections: Any, enabled: Any) -> list[str]:
        self.enabled.append(sorted(enabled))
        return []


async def test_a_service_removed_on_reload_leaves_the_file_output(tmp_path: Path) -> None:
    applier = FakeApplier()
    rec = make_reconciler(config(tmp_path, ["a.example.com"]), applier)
    sink = Sink()
    rec.file_output = sink
    async with running(rec, applier, report("web", "10.0.0.1"), report("api")):
        await eventually(lambda: sink.enabled, what="the first file update")
        new = config(tmp_path, ["a.example.com"])
        del new.services["api"]
        rec.set_config(new)
        await eventually(lambda: sink.enabled[-1] == ["web"], what="file_output without api")


class BrokenSink(Sink):
    """file_output whose update() raises (a bug, or an error it does not handle)."""

    def update(self, selections: Any, enabled: Any) -> list[str]:
        super().update(selections, enabled)
        raise RuntimeError("file_output is broken")


async def test_a_failing_file_output_never_ends_the_reconciler(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An exception from file_output once ended run() and so synapse (HAProxy too, in a
    container): the round's hand-over stands, later rounds go on."""
    applier = FakeApplier()
    rec = make_reconciler(config(tmp_path, ["a.example.com"]), applier)
    sink = BrokenSink()
    rec.file_output = sink
    async with running(rec, applier, report("web", "10.0.0.1"), report("api")) as task:
        await eventually(lambda: sink.enabled, what="the first file update")
        rec.report(report("web", "10.0.0.2"))
        await eventually(lambda: applier.hosts("web") == ["10.0.0.2"], what="the next round")
        await eventually(lambda: len(sink.enabled) >= 2, what="the next file update")
        assert not task.done()
    said = [r for r in caplog.records if r.getMessage() == "outputs_write_failed"]
    assert said and said[0].levelno == logging.ERROR
