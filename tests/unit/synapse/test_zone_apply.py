"""Smart routing wired into the reconciler (synapse/zone_apply.py), with the fake applier.

The weights the reconciler hands over, the evacuation applier behind the admin API, the
state file, and the rendered server lines (specs: a zone-routed server always has an
explicit weight, 0 included). Pure: no process, no socket.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from applier_fakes import FakeApplier, eventually, make_reconciler, running
from prometheus_client import CollectorRegistry

from smartstack.configfile import ConfigError
from smartstack.record import Registration
from synapse.config import SynapseConfig, load_synapse_config
from synapse.contract import ApplyOutcome, ApplyResult
from synapse.haproxy.specs import BackendBuilder, _balance
from synapse.metrics import SynapseMetrics
from synapse.model import DesiredService, Found, Report
from synapse.reconciler import Reconciler
from synapse.state_cache import StateCache
from synapse.status_page import ChangeTracker, page_data
from synapse.zone_apply import ZoneRouter, evacuation_applier
from synapse.zone_state import Evacuations

FLEET = {"az1": 2, "az2": 2, "az3": 6}


def config(tmp_path: Path, haproxy: dict[str, Any] | None = None, **routing: Any) -> SynapseConfig:
    return SynapseConfig.model_validate(
        {
            "zone": "az1",
            "services": {
                "web": {
                    "discovery": {"method": "zookeeper", "hosts": ["h:1"], "path": "/web"},
                    "zone_routing": {"zones": ["az1", "az2", "az3"], **routing},
                    **({"haproxy": haproxy} if haproxy else {}),
                },
                "plain": {"discovery": {"method": "zookeeper", "hosts": ["h:1"], "path": "/p"}},
            },
            "haproxy": {
                "config_file_path": str(tmp_path / "haproxy.cfg"),
                "reload_command": "true",
                "state_file_path": str(tmp_path / "state.json"),
            },
            "startup_wait": 0.3,
        }
    )


def fleet_report(service: str = "web", **counts: int) -> Report:
    """``counts`` servers per zone (default: 2/2/6), each labelled with its zone."""
    found = []
    for index, (zone, count) in enumerate(sorted((counts or FLEET).items())):
        for i in range(count):
            host = f"10.0.{index}.{i + 1}"
            reg = Registration(host=host, port=80, name=f"{zone}-{i}", labels={"zone": zone})
            found.append(Found(reg, f"zk:{host}"))
    return Report(service, "zookeeper", tuple(found))


def weights(desired: list[DesiredService], service: str = "web") -> dict[str, int | None]:
    """Each server's weight as HAProxy uses it: a backup's (another zone's server) counts
    only while no active server has a weight (HAProxy's failover, `option allbackups`)."""
    servers = [s for d in desired if d.name == service for s in d.servers]
    active = any(s.weight for s in servers if not s.backup)
    return {s.name.split("_")[0]: 0 if s.backup and active else s.weight for s in servers}


def failover(desired: list[DesiredService], service: str = "web") -> dict[str, int | None]:
    """The backups' own weights: what HAProxy uses once no local server is up."""
    servers = [s for d in desired if d.name == service for s in d.servers]
    return {s.name.split("_")[0]: s.weight for s in servers if s.backup}


def zone_total(desired: list[DesiredService], zone: str) -> int:
    return sum(w or 0 for name, w in weights(desired).items() if name.startswith(zone))


async def test_local_zone_serves_then_spills_evenly_then_serves_again(tmp_path: Path) -> None:
    applier = FakeApplier()
    rec = make_reconciler(config(tmp_path), applier)
    async with running(rec, applier, fleet_report(), fleet_report("plain", az9=1)):
        first = applier.applied[-1]
        assert weights(first) == {
            "az1-0": 256, "az1-1": 256, **{n: 0 for n in weights(first) if n[:3] != "az1"}
        }  # fmt: skip
        assert weights(first, "plain") == {"az9-0": None}, "a service without zone_routing"
        # The other zones are HAProxy's backups, weighted as the spill would weigh them.
        backups = failover(first)
        assert len(backups) == 8 and all(w and w >= 85 for w in backups.values())
        assert sum(w or 0 for n, w in backups.items() if n[:3] == "az2") == 512
        assert sum(w or 0 for n, w in backups.items() if n[:3] == "az3") == 512
        rec.report(fleet_report(az2=2, az3=6))  # az1's records are gone
        await eventually(lambda: "az1-0" not in weights(applier.applied[-1]), what="the spill")
        spill = applier.applied[-1]
        assert zone_total(spill, "az2") == zone_total(spill, "az3") == 512
        assert all(w and w >= 1 for w in weights(spill).values())
        assert rec.zones.status()["web"]["share"] == {"az1": 0.0, "az2": 0.5, "az3": 0.5}
        rec.report(fleet_report())
        await eventually(lambda: "az1-0" in weights(applier.applied[-1]), what="az1 back")
        assert weights(applier.applied[-1]) == weights(first)


async def test_unchanged_zone_service_is_handed_over_as_the_same_object(tmp_path: Path) -> None:
    applier = FakeApplier()
    rec = make_reconciler(config(tmp_path), applier)
    async with running(rec, applier, fleet_report(), fleet_report("plain", az9=1)):
        assert rec.desired()[0] is rec.desired()[0], "the applier skips it by identity"
        before = rec.desired()[0]
        rec.zones.evacuations = Evacuations().evacuate("az3")
        assert rec.desired()[0] is not before, "a new evacuation is a new desired state"


async def test_evacuation_reaches_the_applier_and_the_state_file(tmp_path: Path) -> None:
    applier = FakeApplier()
    rec = make_reconciler(config(tmp_path), applier)
    async with running(rec, applier, fleet_report(), fleet_report("plain", az9=1)):
        apply = evacuation_applier(rec, applier, lambda: rec.state_cache)
        answer, persisted = await apply(Evacuations().evacuate("az1"))
        assert persisted
        assert answer["web"]["mode"] == "spill" and answer["web"]["evacuated"] == ["az1"]
        assert set(answer) == {"web"}, "only zone-routed services have a zones object"
        assert applier.reasons[-1] == "zone evacuations changed"
        assert zone_total(applier.applied[-1], "az1") == 0
        saved = json.loads((tmp_path / "state.json").read_text())
        assert saved["_synapse"]["zone_evacuations"]["global"] == ["az1"]
        # A restart reads them back: the first hand-over already keeps az1 evacuated.
        again = make_reconciler(config(tmp_path), FakeApplier())
        assert again.zones.evacuations == Evacuations().evacuate("az1")
        count = len(applier.applied)
        await apply(Evacuations())
        await round_after(applier, count + 1)
        assert zone_total(applier.applied[-1], "az1") == 512


async def round_after(applier: FakeApplier, count: int) -> None:
    """The reconciler's own round that an evacuation asks for (it re-sends everything)."""
    await eventually(lambda: len(applier.applied) > count, what="the reconciler's round")
    assert applier.reasons[-1] == "zone evacuations changed"


async def test_evacuation_before_the_first_hand_over_waits_for_it(tmp_path: Path) -> None:
    applier = FakeApplier()
    rec = make_reconciler(config(tmp_path), applier)
    apply = evacuation_applier(rec, applier, lambda: rec.state_cache)
    answer, _ = await apply(Evacuations().evacuate("az1"))
    assert applier.applied == [] and answer == {}, "no partial desired state is sent"
    async with running(rec, applier, fleet_report(), fleet_report("plain", az9=1)):
        assert zone_total(applier.applied[0], "az1") == 0, "the first round is evacuated"
        assert zone_total(applier.applied[0], "az2") == 512


async def test_a_new_local_zone_from_a_reloaded_config_moves_traffic(tmp_path: Path) -> None:
    applier = FakeApplier()
    rec = make_reconciler(config(tmp_path), applier)
    async with running(rec, applier, fleet_report(), fleet_report("plain", az9=1)):
        assert zone_total(applier.applied[-1], "az1") == 512
        moved = config(tmp_path).model_copy(update={"zone": "az3"})
        rec.set_config(moved)
        await eventually(lambda: zone_total(applier.applied[-1], "az3") > 0, what="az3 local")
        assert zone_total(applier.applied[-1], "az1") == 0
        assert rec.zones.status()["web"]["local_zone"] == "az3"


class RefusingApplier(FakeApplier):
    async def apply(self, desired: list[DesiredService], reason: str) -> ApplyResult:
        await super().apply(desired, reason)
        return ApplyResult(reload=ApplyOutcome.INVALID)


async def test_refused_evacuation_changes_nothing(tmp_path: Path) -> None:
    applier = RefusingApplier()
    rec = make_reconciler(config(tmp_path), applier)
    async with running(rec, applier, fleet_report(), fleet_report("plain", az9=1)):
        apply = evacuation_applier(rec, applier, lambda: rec.state_cache)
        count = len(applier.applied)
        with pytest.raises(RuntimeError, match="did not take the new weights"):
            await apply(Evacuations().evacuate("az1"))
        assert rec.zones.evacuations == Evacuations()
        await round_after(applier, count + 1)
        assert zone_total(applier.applied[-1], "az1") == 512, "the old weights are re-sent"
        cache = StateCache(tmp_path / "state.json", 60)
        cache.load()
        assert cache.evacuations == Evacuations()


def test_router_leaves_services_without_zone_routing_alone(tmp_path: Path) -> None:
    service = DesiredService("plain", config(tmp_path).services["plain"], [])
    router = ZoneRouter("az1")
    assert router.weighted(service) is service
    assert router.status() == {}


def test_config_evacuate_and_runtime_evacuation_add_up(tmp_path: Path) -> None:
    cfg = config(tmp_path, evacuate=["az2"])
    rec = Reconciler(cfg, None, _metrics())
    rec.report(fleet_report(az2=2, az3=6))
    rec._select_all()
    rec.zones.evacuations = Evacuations().evacuate("az3", "web")
    rec.desired()
    status = rec.zones.status()
    assert status["web"]["mode"] == "evacuated_fallback"
    assert status["web"]["evacuated"] == ["az2", "az3"]


def _metrics() -> SynapseMetrics:
    return SynapseMetrics(CollectorRegistry())


def test_zone_weights_render_explicitly_even_when_zero(tmp_path: Path) -> None:
    """Weight 0 keeps the server in the backend (a later `set weight` brings it back)."""
    rec = Reconciler(config(tmp_path), None, _metrics())
    rec.report(fleet_report())
    rec._select_all()
    web = next(d for d in rec.desired() if d.name == "web")
    spec = BackendBuilder([], 1000, 1).backend(web, [], {}, [])
    assert spec.dynamic and spec.balance == "roundrobin"
    assert len(spec.servers) == 10
    lines = {name.split("_")[0]: s.options for name, s in spec.servers.items()}
    assert lines["az1-0"].endswith("weight 256") and lines["az3-5"].endswith("weight 85 backup")
    rec.zones.evacuations = Evacuations().evacuate("az3")
    web = next(d for d in rec.desired() if d.name == "web")
    spec = BackendBuilder([], 1000, 1).backend(web, [], {}, [])
    lines = {name.split("_")[0]: s.options for name, s in spec.servers.items()}
    assert lines["az3-5"].endswith("weight 0 backup") and lines["az2-0"].endswith("256 backup")


@pytest.mark.parametrize(
    ("lines", "refused"),
    [
        (["balance roundrobin"], False),
        (["balance leastconn"], False),
        (["balance source", "hash-type consistent"], False),
        (["balance static-rr"], True),
        (["balance source"], True),
        (["balance uri"], True),
    ],
)
def test_zone_routing_needs_a_dynamic_balance(tmp_path: Path, lines: list[str], refused: bool):
    doc = {
        "services": {
            "web": {
                "discovery": {"method": "base"},
                "haproxy": {"backend": lines},
                "zone_routing": {},
            }
        }
    }
    path = tmp_path / "synapse.yaml"
    path.write_text(json.dumps(doc))
    dynamic = _balance(lines, [])[1]
    assert dynamic is not refused, "the planner's view of the algorithm agrees"
    if not refused:
        load_synapse_config(path)
        return
    with pytest.raises(ConfigError) as caught:
        load_synapse_config(path)
    text = "\n".join(caught.value.lines)
    assert f"{path}: services.web" in text and "dynamic balance algorithm" in text, text


def test_a_static_default_balance_is_refused_for_zone_routing(tmp_path: Path) -> None:
    path = tmp_path / "synapse.yaml"
    doc = {
        "services": {"web": {"discovery": {"method": "base"}, "zone_routing": {}}},
        "haproxy": {"config_file_path": str(tmp_path / "h.cfg"), "reload_command": "true",
                    "defaults": ["balance static-rr"]},
    }  # fmt: skip
    path.write_text(json.dumps(doc))
    with pytest.raises(ConfigError) as caught:
        load_synapse_config(path)
    text = "\n".join(caught.value.lines)
    assert "services.web (balance from haproxy.defaults)" in text and "static-rr" in text, text
    doc["services"]["web"]["haproxy"] = {"backend": ["balance roundrobin"]}
    path.write_text(json.dumps(doc))
    load_synapse_config(path)  # the backend's own balance wins


def test_status_page_shows_the_zone_split() -> None:
    zone = {"servers": 1, "usable": 1, "active": True, "evacuated": False, "share": 0.5}
    zones = {"local_zone": "az1", "mode": "spill", "evacuated": ["az1"],
             "share": {"az1": 0.0, "az2": 0.5, "az3": 0.5},
             "zones": {"az1": {**zone, "evacuated": True, "active": False, "share": 0.0},
                       "az2": zone, "az3": zone}}  # fmt: skip
    status = {"services": {"web": {"servers": [], "zones": zones}}}
    [web] = page_data(status, {}, {}, ChangeTracker(), 1.0)["services"]
    assert web["zm"] == {"mode": "spill", "local": "az1", "evacuated": ["az1"]}
    assert [(z["z"], z["share"], z["evacuated"]) for z in web["z"]] == [
        ("az1", 0.0, True), ("az2", 0.5, False), ("az3", 0.5, False)]  # fmt: skip


async def test_a_service_removed_by_sighup_leaves_no_zone_state(tmp_path: Path) -> None:
    applier = FakeApplier()
    full = config(tmp_path, {"port": 3000}, zone_of_address={"127.0.0.2": "az2"})
    rec = make_reconciler(full, applier)
    async with running(rec, applier, fleet_report(), fleet_report("plain", az9=1)):
        apply = evacuation_applier(rec, applier, lambda: rec.state_cache)
        assert set((await apply(Evacuations().evacuate("az3")))[0]) == {"web"}
        assert "web_zone_az1" in {d.name for d in applier.applied[-1]}
        smaller = full.model_copy(update={"services": {"plain": full.services["plain"]}})
        rec.set_config(smaller)
        assert (await apply(Evacuations()))[0] == {}, "the answer lists no removed service"
        router = rec.zones
        assert not router.decisions and not router._made and not router.backends.services()
        assert not router.backends._configs and not router.backends._owners


async def test_a_new_service_takes_its_name_back_from_a_record_zone(tmp_path: Path) -> None:
    # web's records name zone "evil": web_zone_evil is its zone backend until a SIGHUP
    # brings a service of that name (two DesiredServices of one name would clash).
    applier = FakeApplier()
    routed = config(tmp_path, {"port": 3000}, zones=[], zone_of_address={"127.0.0.2": "az2"})
    rec = make_reconciler(routed, applier)
    async with running(rec, applier, fleet_report(az1=1, evil=1), fleet_report("plain", az9=1)):
        assert "web_zone_evil" in [d.name for d in applier.applied[-1]]
        grown = routed.model_copy(deep=True)
        grown.services["web_zone_evil"] = grown.services["plain"]
        count = len(applier.applied)
        rec.set_config(grown)
        rec.report(fleet_report("web_zone_evil", az9=1))  # (a new service waits for it)
        await eventually(lambda: len(applier.applied) > count, what="the hand-over")
        names = [d.name for d in applier.applied[-1]]
        assert sorted(names) == ["plain", "web", "web_zone_az1", "web_zone_az2", "web_zone_evil"]
        [taken] = [d for d in applier.applied[-1] if d.name == "web_zone_evil"]
        assert taken.config.zone_routing is None and taken.backend_name == "web_zone_evil"
        assert rec.zones.status()["web"]["named"] == ["az1"]


async def test_a_name_set_free_by_sighup_goes_to_the_record_zone(tmp_path: Path) -> None:
    applier = FakeApplier()
    routed = config(tmp_path, {"port": 3000}, zones=[], zone_of_address={"127.0.0.2": "az2"})
    full = routed.model_copy(deep=True)
    full.services["web_zone_evil"] = full.services["plain"]
    rec = make_reconciler(full, applier)
    async with running(rec, applier, fleet_report(az1=1, evil=1), fleet_report("plain", az9=1)):
        [owner] = [d for d in applier.applied[-1] if d.name == "web_zone_evil"]
        assert owner.servers == [], "the service keeps its name; the zone gets no backend"
        count = len(applier.applied)
        rec.set_config(routed)  # the service is gone: its name is free
        await eventually(lambda: len(applier.applied) > count, what="the hand-over")
        [zone] = [d for d in applier.applied[-1] if d.name == "web_zone_evil"]
        assert [s.name for s in zone.servers] == ["evil-0_10.0.1.1:80"]


def test_known_zones_are_the_configs_and_the_records_since_the_start(tmp_path: Path) -> None:
    cfg = config(tmp_path, zones=[], evacuate=["az7"])
    rec = Reconciler(cfg, None, _metrics())
    rec.report(fleet_report(az2=1, az3=1))
    rec._select_all()
    rec.desired()
    routing = cfg.services["web"].zone_routing
    assert routing is not None
    assert rec.zones.known_zones("web", routing) == {"az2", "az3", "az7"}
    rec.report(fleet_report(az3=1))  # az2's records went: still known (evacuate it ahead)
    rec._select_all()
    rec.desired()
    assert rec.zones.known_zones("web", routing) == {"az2", "az3", "az7"}
