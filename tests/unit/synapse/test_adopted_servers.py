"""A synapse started while its registry is silent, with no state file entry for a service,
keeps the servers the running HAProxy serves for it (``synapse.adopted_servers``) instead
of emptying the backend; the registry's first answer replaces them. Nothing is invented
for a backend HAProxy does not run, or when its runtime API does not answer."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from applier_fakes import FakeApplier, eventually, make_reconciler, report, running

from smartstack.logs import _FIELDS as FIELDS
from synapse.adopted_servers import _found, _record, _Shape
from synapse.config import SynapseConfig
from synapse.haproxy.configtext import ServerLine
from synapse.haproxy.loadmark import LoadMark

WEB_DISCOVERY = {"method": "zookeeper", "hosts": ["h:1"], "path": "/web"}
RUNNING_FILE = """\
backend web
    balance roundrobin
    server n_10.0.0.5:80 10.0.0.5:80 id 1 check
    server n_10.0.0.6:80 10.0.0.6:80 id 2 check
    server n_10.0.0.7:80 10.0.0.7:80 id 3 check
    server n_10.0.0.8:80 10.0.0.8:80 id 4 check
"""


class RunningHAProxy(FakeApplier):
    """An adopted HAProxy: ``servers_of`` answers ``states`` (None: no answer)."""

    def __init__(self, states: dict[str, dict[str, str]] | None) -> None:
        super().__init__()
        self.states = states
        self.asked: list[list[str]] = []

    async def servers_of(self, backends: Sequence[str]) -> dict[str, dict[str, str] | None]:
        self.asked.append(list(backends))
        return {b: (self.states or {}).get(b) for b in backends}


def config(tmp_path: Path, **haproxy: Any) -> SynapseConfig:
    (tmp_path / "haproxy.cfg").write_text(RUNNING_FILE)
    other = {"discovery": {**WEB_DISCOVERY, "path": "/other"}, "haproxy": {"port": 3214}}
    return SynapseConfig.model_validate({
        "services": {"web": {"discovery": WEB_DISCOVERY}, "other": other},
        "haproxy": {"config_file_path": str(tmp_path / "haproxy.cfg"),
                    "reload_command": "true", **haproxy},
        "startup_wait": 0.3,
    })  # fmt: skip


# 10.0.0.7 is in maintenance (synapse took it out), 10.0.0.8 is in the file only.
STATES = {"web": {"n_10.0.0.5:80": "UP", "n_10.0.0.6:80": "DOWN", "n_10.0.0.7:80": "MAINT"}}


async def test_a_silent_registry_without_state_keeps_what_haproxy_serves(tmp_path: Path) -> None:
    applier = RunningHAProxy(STATES)
    rec = make_reconciler(config(tmp_path), applier)
    async with running(rec, applier):
        assert applier.hosts("web") == ["10.0.0.5", "10.0.0.6"]
        status = rec.service_status()["web"]
        assert status["origin"] == "haproxy"
        assert [s["name"] for s in status["servers"]] == ["n_10.0.0.5:80", "n_10.0.0.6:80"]
        assert applier.hosts("other") == []  # HAProxy runs no backend `other`: nothing made up
        rec.report(report("other", "10.1.1.1"))  # another service's round: web's stay
        await eventually(lambda: applier.hosts("other") == ["10.1.1.1"], what="other's round")
        assert applier.hosts("web") == ["10.0.0.5", "10.0.0.6"]
        assert rec.service_status()["web"]["origin"] == "haproxy"
        rec.report(report("web", "10.0.0.9"))  # the registry answers: its answer wins
        await eventually(lambda: applier.hosts("web") == ["10.0.0.9"], what="the registry's")
        assert rec.service_status()["web"]["origin"] == "discovery"


async def test_no_answer_from_haproxy_keeps_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """And says so: the config file declares no other admin socket to read them through
    (an upgrade's HAProxy without synapse's own socket kept nothing, silently)."""
    applier = RunningHAProxy(None)  # no HAProxy adopted: the socket does not answer
    rec = make_reconciler(config(tmp_path), applier)
    async with running(rec, applier):
        assert applier.hosts("web") == []
        assert applier.asked == [["web"]]  # (the file has no servers of `other`: not asked)
    unread = [vars(r)[FIELDS] for r in caplog.records
              if r.getMessage() == "startup_haproxy_servers_unread"]  # fmt: skip
    assert len(unread) == 1 and "declares no admin socket" in unread[0]["error"]


async def test_the_state_file_comes_first(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    entry = {"timestamp": int(time.time()), "host": "10.9.9.9", "port": 80, "name": "n"}
    state.write_text(json.dumps({"web": {"n_10.9.9.9:80": entry}}))
    applier = RunningHAProxy(STATES)
    rec = make_reconciler(config(tmp_path, state_file_path=str(state)), applier)
    async with running(rec, applier):
        assert applier.hosts("web") == ["10.9.9.9"]
        assert rec.service_status()["web"]["origin"] == "state_file"
        assert applier.asked == []  # (web is in the state file; `other` not in HAProxy's)


async def managed(
    tmp_path: Path, vouched: bool, marker: str | None = None, **service: Any
) -> tuple[SynapseConfig, Path]:
    """Managed mode, the default state file holding 10.0.0.5 (labelled tier=prod, a
    ``backup``) and 10.9.9.9 (gone since) for web; ``vouched``: the marker names the
    config file (no other writer came since); ``marker``: the marker's text instead."""
    cfg = config(tmp_path, managed={}, registry_server_options={"allow": True})
    if service:
        web = cfg.services["web"].model_validate({**cfg.services["web"].model_dump(), **service})
        cfg = cfg.model_copy(update={"services": {**cfg.services, "web": web}})
    state = tmp_path / "haproxy.synapse-state.json"
    now = int(time.time())
    entries = {f"n_{h}:80": {"timestamp": now, "host": h, "port": 80, "name": "n",
                             "labels": {"tier": "prod"}, "haproxy_server_options": "backup"}
               for h in ("10.0.0.5", "10.9.9.9")}  # fmt: skip
    state.write_text(json.dumps({"web": entries}))
    await LoadMark(tmp_path / "haproxy.cfg").loaded()  # (synapse's last write: this file)
    if not vouched:  # an older synapse rewrote the file since: it knows no marker
        (tmp_path / "haproxy.cfg").write_text(RUNNING_FILE + "# (rewritten)\n")
    if marker is not None:
        (tmp_path / "haproxy.cfg.loaded").write_text(marker)
    return cfg, state


FILTERED = {  # (not-equals needs no label: a missing one is not equal)
    "discovery": {**WEB_DISCOVERY, "label_filters": [
        {"label": "tier", "value": "prod"},
        {"label": "canary", "value": "true", "condition": "not-equals"},
    ]},
}  # fmt: skip


def backups(applier: RunningHAProxy, service: str) -> dict[str, bool]:
    """Per host: whether it runs as the backup its record asks for."""
    return {s.host: s.registry_options == "backup"
            for d in applier.applied[-1] if d.name == service for s in d.servers}  # fmt: skip


async def test_a_state_file_behind_the_adopted_haproxy_gives_way_to_it(tmp_path: Path) -> None:
    """After a rollback: the state file still held 10.9.9.9, which an older synapse removed
    from HAProxy since (its port answered as another service: 300 of 600 requests)."""
    cfg, state = await managed(tmp_path, vouched=False)
    applier = RunningHAProxy(STATES)
    rec = make_reconciler(cfg, applier)
    async with running(rec, applier):
        assert applier.hosts("web") == ["10.0.0.5", "10.0.0.6"]  # HAProxy's, not the file's
        on_disk = json.loads(state.read_text())  # (a restart must not take it back)
        assert on_disk["web"]["n_10.9.9.9:80"]["left"] is True
        assert {k for k, v in on_disk["web"].items() if not v.get("left")} == {
            "n_10.0.0.5:80", "n_10.0.0.6:80"}  # fmt: skip


async def test_a_state_file_behind_haproxy_keeps_its_records_of_the_servers_both_have(
    tmp_path: Path,
) -> None:
    """Labels and options are not in the config file: rebuilt from its server lines, a
    label_filters service lost every server (400 of 400 503) and a backup took live
    traffic (200 of 400). The one the file lacks (10.0.0.6) gets the label its filter
    requires (HAProxy runs it: a filter kept it). The merge stays in the file: a reboot
    serves it again."""
    cfg, state = await managed(tmp_path, vouched=False, **FILTERED)
    applier = RunningHAProxy(STATES)
    rec = make_reconciler(cfg, applier)
    async with running(rec, applier):
        assert backups(applier, "web") == {"10.0.0.5": True, "10.0.0.6": False}
    on_disk = json.loads(state.read_text())["web"]
    assert on_disk["n_10.0.0.6:80"]["labels"] == {"tier": "prod"}
    rebooted = RunningHAProxy(None)  # HAProxy gone too, the registry still silent
    rec = make_reconciler(cfg, rebooted)
    async with running(rec, rebooted):
        assert backups(rebooted, "web") == {"10.0.0.5": True, "10.0.0.6": False}
        assert rec.service_status()["web"]["origin"] == "state_file"


async def test_a_filtered_service_without_state_keeps_what_haproxy_serves(
    tmp_path: Path,
) -> None:
    """No state file: the servers HAProxy runs are rebuilt from their lines, with the
    labels the service's filters require (without: every one filtered out, 503s)."""
    cfg = config(tmp_path)
    web = cfg.services["web"].model_validate({**cfg.services["web"].model_dump(), **FILTERED})
    cfg = cfg.model_copy(update={"services": {**cfg.services, "web": web}})
    applier = RunningHAProxy(STATES)
    rec = make_reconciler(cfg, applier)
    async with running(rec, applier):
        assert applier.hosts("web") == ["10.0.0.5", "10.0.0.6"]


async def test_a_marker_without_identity_does_not_put_the_state_file_behind(
    tmp_path: Path,
) -> None:
    """A bare ``loaded`` is the previous release's, which kept the state file current: an
    upgrade with the registry down serves the file (its labels, its backups) as it did."""
    cfg, _ = await managed(tmp_path, vouched=False, marker="loaded\n")
    applier = RunningHAProxy(STATES)
    rec = make_reconciler(cfg, applier)
    async with running(rec, applier):
        assert backups(applier, "web") == {"10.0.0.5": True, "10.9.9.9": True}
        assert applier.asked == []


async def test_a_state_file_behind_an_emptied_backend_adds_nothing(tmp_path: Path) -> None:
    cfg, _ = await managed(tmp_path, vouched=False)
    applier = RunningHAProxy({"web": {f"n_10.0.0.{n}:80": "MAINT" for n in (5, 6, 7)}})
    rec = make_reconciler(cfg, applier)
    async with running(rec, applier):
        assert applier.hosts("web") == []


async def test_a_state_file_the_marker_vouches_for_comes_first(tmp_path: Path) -> None:
    """No other writer since synapse's last write (a plain restart): the file, as ever."""
    cfg, _ = await managed(tmp_path, vouched=True)
    applier = RunningHAProxy(STATES)
    rec = make_reconciler(cfg, applier)
    async with running(rec, applier):
        assert applier.hosts("web") == ["10.0.0.5", "10.9.9.9"]
        assert rec.service_status()["web"]["origin"] == "state_file"
        assert applier.asked == []


async def test_a_leader_election_service_keeps_the_leader_haproxy_runs(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    web = cfg.services["web"].model_copy(update={"leader_election": True})
    cfg = cfg.model_copy(update={"services": {**cfg.services, "web": web}})
    applier = RunningHAProxy({"web": {"n_10.0.0.6:80": "UP"}})  # the leader, alone
    rec = make_reconciler(cfg, applier)
    async with running(rec, applier):
        assert applier.hosts("web") == ["10.0.0.6"]  # (no sequence: the election failed)
        rec.report(report("other", "10.1.1.1"))  # a second round elects it again
        await eventually(lambda: applier.hosts("other") == ["10.1.1.1"], what="other's round")
        assert applier.hosts("web") == ["10.0.0.6"]


ZONED_FILE = """\
backend web
    server n_10.0.0.5:80 10.0.0.5:80 id 1 weight 128 check
    server n_10.0.0.6:80 10.0.0.6:80 id 2 weight 128 check backup
backend web_zone_az2
    server n_10.0.0.6:80 10.0.0.6:80 id 1 check
"""


async def test_a_zone_routed_service_keeps_its_servers_zones(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    (tmp_path / "haproxy.cfg").write_text(ZONED_FILE)
    routing = {"zone_routing": {"zones": ["az1", "az2"]}}
    web = cfg.services["web"].model_validate({**cfg.services["web"].model_dump(), **routing})
    cfg = cfg.model_copy(update={"zone": "az1", "services": {**cfg.services, "web": web}})
    applier = RunningHAProxy({"web": {"n_10.0.0.5:80": "UP", "n_10.0.0.6:80": "UP"}})
    rec = make_reconciler(cfg, applier)
    async with running(rec, applier):
        servers = {s.host: s for d in applier.applied[-1] if d.name == "web" for s in d.servers}
        assert {h: dict(s.labels).get("zone") for h, s in servers.items()} == {
            "10.0.0.5": "az1", "10.0.0.6": "az2"}  # fmt: skip
        assert not servers["10.0.0.5"].backup and servers["10.0.0.6"].backup  # local first


def test_a_server_line_gives_back_its_registration() -> None:
    line = ServerLine("web-1_10.0.0.5:80", "10.0.0.5:80", 1, None, "weight 7 check")
    record = _record(line)
    assert record is not None
    found = _found(record, "web")
    assert found is not None
    reg = found.registration
    assert (reg.host, reg.port, reg.name, reg.weight) == ("10.0.0.5", 80, "web-1", 7)
    assert found.origin == "haproxy:web/web-1_10.0.0.5:80"
    ipv6 = _record(ServerLine("n_::1:81", "[::1]:81", None, None, ""))
    assert ipv6 is not None and (ipv6["host"], ipv6["name"]) == ("::1", "n")
    assert _record(ServerLine("x", "/run/web.sock", None, None, "")) is None


def test_a_server_line_gives_back_its_registry_options() -> None:
    """What follows the service's own options (``%{...}`` replaced) is the record's, as
    far as the service takes registry options: a ``backup`` stays a backup."""
    shape = _Shape(own="check inter 2s port %{port} weight 3", keywords=("backup", "maxconn"))
    line = ServerLine("n_10.0.0.5:80", "10.0.0.5:80", 1, None, "check inter 2s port 80 backup "
                      "maxconn 9 track x/y weight 7")  # fmt: skip
    record = _record(line, shape)
    assert record is not None and record["weight"] == 7
    assert record["haproxy_server_options"] == "backup maxconn 9"  # (track: not allowed)
    no_registry_options = _Shape(own=shape.own)
    assert "haproxy_server_options" not in (_record(line, no_registry_options) or {})
    changed_own = _Shape(own="check inter 5s", keywords=("backup",))  # (since rewritten)
    assert (_record(line, changed_own) or {})["haproxy_server_options"] == "backup"
    dns = ServerLine("n_web.local:80", "web.local:80", 1, None,
                     "backup init-addr last,libc,none")  # fmt: skip
    assert (_record(dns, shape) or {})["haproxy_server_options"] == "backup"
    # zone routing's own `backup` (another zone's server, last) is not the record's
    zoned = _Shape(zone_label="zone", zoned={"n_10.0.0.5:80": "az2"}, keywords=("backup",))
    other_zone = ServerLine("n_10.0.0.5:80", "10.0.0.5:80", 1, None, "weight 128 backup")
    record = _record(other_zone, zoned) or {}
    assert "haproxy_server_options" not in record and record["labels"] == {"zone": "az2"}
