"""What a restart or a SIGHUP does not know yet never empties a backend HAProxy serves.

A restarted synapse adopts the HAProxy that kept serving; a service whose first report is
empty (a registry glitch, a path not there yet) keeps the servers the state file holds.
A renamed service, or one whose discovery changed, keeps its servers until its new
watcher has reported, even with ``use_previous_backends: false`` (nothing known is not
"discovery returned nothing").
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from applier_fakes import FakeApplier, eventually, make_reconciler, report, running

from synapse.config import SynapseConfig
from synapse.daemon_parts import state_key

WEB_DISCOVERY = {"method": "zookeeper", "hosts": ["h:1"], "path": "/web"}


def config(tmp_path: Path, services: dict[str, Any], **haproxy: Any) -> SynapseConfig:
    return SynapseConfig.model_validate({
        "services": services,
        "haproxy": {
            "config_file_path": str(tmp_path / "haproxy.cfg"),
            "reload_command": "true",
            **haproxy,
        },
        "startup_wait": 0.3,
    })  # fmt: skip


def write_state(path: Path, host: str) -> None:
    entry = {"timestamp": int(time.time()), "host": host, "port": 80, "name": "n"}
    path.write_text(json.dumps({"web": {f"n_{host}:80": entry}}))


async def test_an_empty_first_report_keeps_the_servers_of_the_state_file(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    write_state(state, "10.9.9.9")
    cfg = config(tmp_path, {"web": {"discovery": WEB_DISCOVERY}}, state_file_path=str(state))
    applier = FakeApplier()
    rec = make_reconciler(cfg, applier)
    async with running(rec, applier, report("web")):  # the registry answers: no records
        assert applier.hosts("web") == ["10.9.9.9"]
        assert rec.service_status()["web"]["origin"] == "state_file"
        rec.report(report("web", "10.0.0.1"))  # records again: they replace the kept ones
        await eventually(lambda: applier.hosts("web") == ["10.0.0.1"], what="the hand-over")


async def test_without_a_state_file_an_empty_first_report_is_empty(tmp_path: Path) -> None:
    cfg = config(tmp_path, {"web": {"discovery": WEB_DISCOVERY}})
    applier = FakeApplier()
    rec = make_reconciler(cfg, applier)
    async with running(rec, applier, report("web")):
        assert applier.hosts("web") == []  # nothing was ever known: nothing to keep


async def test_a_renamed_service_keeps_its_servers_until_its_watcher_reports(
    tmp_path: Path,
) -> None:
    def named(name: str) -> SynapseConfig:
        return config(tmp_path, {name: {"discovery": WEB_DISCOVERY, "haproxy": {"port": 3000}}})

    applier = FakeApplier()
    rec = make_reconciler(named("web"), applier)
    async with running(rec, applier, report("web", "10.0.0.1", "10.0.0.2")):
        rec.set_config(named("web2"))
        await eventually(lambda: len(applier.applied) == 2, what="the reload's hand-over")
        [renamed] = applier.applied[-1]
        assert renamed.name == "web2" and renamed.config.haproxy.port == 3000
        assert sorted(s.host for s in renamed.servers) == ["10.0.0.1", "10.0.0.2"]


async def test_changed_discovery_keeps_the_servers_until_the_new_watcher_reports(
    tmp_path: Path,
) -> None:
    def watching(path: str) -> SynapseConfig:
        discovery = WEB_DISCOVERY | {"path": path}
        return config(tmp_path, {"web": {"discovery": discovery, "use_previous_backends": False}})

    applier = FakeApplier()
    rec = make_reconciler(watching("/web"), applier)
    async with running(rec, applier, report("web", "10.0.0.1")):
        rec.set_config(watching("/web-v2"))
        await eventually(lambda: len(applier.applied) == 2, what="the reload's hand-over")
        assert applier.hosts("web") == ["10.0.0.1"]  # not heard from yet: kept
        assert rec.service_status()["web"]["origin"] == "previous"
        rec.report(report("web"))  # the new path answers: nothing there, and no keeping
        await eventually(lambda: applier.hosts("web") == [], what="the empty hand-over")


@pytest.mark.parametrize(
    ("extra", "expected"),
    [({}, ["10.0.0.1", "10.0.0.2"]),
     ({"keep_default_servers": True}, ["10.0.0.1", "10.0.0.2", "192.0.2.8"])],
)  # fmt: skip
async def test_changed_discovery_with_default_servers_keeps_the_discovered_servers(
    tmp_path: Path, extra: dict[str, Any], expected: list[str]
) -> None:
    """Not the defaults alone until the new watcher reports (its registry may be down);
    keep_default_servers: the SIGHUP's defaults beside the discovered servers."""

    def watching(hosts: list[str], default: str) -> SynapseConfig:
        defaults = [{"host": default, "port": 80, "name": "fallback"}]
        web = {"discovery": WEB_DISCOVERY | {"hosts": hosts}, "default_servers": defaults}
        return config(tmp_path, {"web": web | extra})

    applier = FakeApplier()
    rec = make_reconciler(watching(["h:1"], "192.0.2.9"), applier)
    async with running(rec, applier, report("web", "10.0.0.1", "10.0.0.2")):
        rec.set_config(watching(["h:1", "h:2"], "192.0.2.8"))  # one more ensemble member
        await eventually(lambda: len(applier.applied) == 2, what="the reload's hand-over")
        assert applier.hosts("web") == expected
        rec.report(report("web"))  # the new watcher answers: nothing there
        await eventually(lambda: applier.hosts("web") == ["192.0.2.8"], what="the defaults")


def test_managed_mode_keeps_a_state_file_beside_the_config_by_default(tmp_path: Path) -> None:
    services = {"web": {"discovery": WEB_DISCOVERY}}
    managed = SynapseConfig.model_validate({
        "services": services,
        "haproxy": {"config_file_path": str(tmp_path / "haproxy.cfg"), "managed": {}},
    })  # fmt: skip
    assert state_key(managed) == (str(tmp_path / "haproxy.synapse-state.json"), 86400)
    chosen = managed.model_copy(
        update={"haproxy": managed.haproxy.model_copy(update={"state_file_path": "/x.json"})}
    )
    assert state_key(chosen) == ("/x.json", 86400)
    airbnb = config(tmp_path, services)  # not managed: only when asked for, as in Ruby
    assert state_key(airbnb) == (None, 86400)


async def test_a_new_label_filter_not_heard_from_yet_keeps_the_servers(tmp_path: Path) -> None:
    """The state file is the start's: a SIGHUP's new discovery (a label filter) is not
    applied to the state file's servers, which would empty the backend before its watcher
    even answered."""
    state = tmp_path / "state.json"
    write_state(state, "10.0.0.1")

    def filtered(*filters: dict[str, str]) -> SynapseConfig:
        discovery = WEB_DISCOVERY | {"label_filters": list(filters)}
        web = {"discovery": discovery, "use_previous_backends": False}
        return config(tmp_path, {"web": web}, state_file_path=str(state))

    applier = FakeApplier()
    rec = make_reconciler(filtered(), applier)
    async with running(rec, applier, report("web", "10.0.0.1")):
        rec.set_config(filtered({"label": "zone", "value": "az9"}))
        await eventually(lambda: len(applier.applied) == 2, what="the reload's hand-over")
        assert applier.hosts("web") == ["10.0.0.1"]


async def test_a_rename_among_two_alike_removed_services_carries_nothing(tmp_path: Path) -> None:
    def services(*names: str) -> SynapseConfig:
        return config(tmp_path, {n: {"discovery": WEB_DISCOVERY} for n in names})

    applier = FakeApplier()
    rec = make_reconciler(services("a", "b"), applier)
    async with running(rec, applier, report("a", "10.0.0.1"), report("b", "10.0.0.1")):
        rec.set_config(services("c"))  # which of a and b became c? unknown: not guessed
        await eventually(lambda: len(applier.applied) == 2, what="the reload's hand-over")
        assert rec.service_status()["c"]["servers"] == []
