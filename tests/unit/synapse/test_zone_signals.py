"""Zone signals (docs/zone-routing.md): the sticky cookie, the zone header and the
arrival address. Config checks, the zone backends (synapse/zone_backends.py), their
frontend lines (synapse/haproxy/zone_lines.py) and the server-zone map
(synapse/haproxy/zone_map.py). Pure: no process, no socket."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from smartstack.configfile import ConfigError
from smartstack.record import Registration
from synapse.config import SynapseConfig, load_synapse_config
from synapse.haproxy.metrics import HAProxyMetrics
from synapse.haproxy.render import Renderer
from synapse.haproxy.sockets import SocketUnavailable
from synapse.haproxy.zone_map import ZoneMapSync, map_path, runtime_commands, wanted_entries
from synapse.metrics import SynapseMetrics
from synapse.model import DesiredService, Found, Server
from synapse.port_clash import admin_port_clashes
from synapse.resilience_config import ZONE_OBSERVE
from synapse.status_page import zone_mode
from synapse.zone_apply import ZoneRouter
from synapse.zone_backends import FORGET_AFTER, MAX_RECORD_ZONES, in_zone_weights, open_zones
from synapse.zone_config import ZoneRouting
from synapse.zone_state import Evacuations
from synapse.zones import ZoneServer, decide

SIGNALS = {"sticky": "SRVZONE", "header": "X-Zone", "zone_of_address": {"127.0.0.2": "az2"}}


def doc(tmp_path: Path, routing: dict[str, Any], haproxy: dict[str, Any] | None = None) -> dict:
    return {
        "zone": "az1",
        "services": {
            "web": {
                "discovery": {"method": "zookeeper", "hosts": ["h:1"], "path": "/web"},
                "haproxy": {"port": 3000, "frontend": ["mode http"], "backend": ["mode http"]}
                | (haproxy or {}),
                "zone_routing": {"zones": ["az1", "az2", "az3"], **routing},
            }
        },
        "haproxy": {"config_file_path": str(tmp_path / "haproxy.cfg"), "reload_command": "true"},
    }


def load(tmp_path: Path, document: dict) -> SynapseConfig:
    path = tmp_path / "synapse.json"
    path.write_text(json.dumps(document))
    return load_synapse_config(path)[0]


def refusal(tmp_path: Path, document: dict) -> str:
    path = tmp_path / "synapse.json"
    path.write_text(json.dumps(document))
    with pytest.raises(ConfigError) as caught:
        load_synapse_config(path)
    text = "\n".join(caught.value.lines)
    assert text.startswith(f"{path}: "), text
    return text


def test_signals_load(tmp_path: Path) -> None:
    routing = load(tmp_path, doc(tmp_path, SIGNALS)).services["web"].zone_routing
    assert routing is not None and routing.signals == ("sticky", "header", "zone_of_address")
    assert routing.sticky == "SRVZONE" and routing.zone_of_address == {"127.0.0.2": "az2"}


@pytest.mark.parametrize("key", ["sticky", "header"])
def test_cookie_and_header_need_an_http_frontend(tmp_path: Path, key: str) -> None:
    tcp = {"frontend": [], "backend": []}
    text = refusal(tmp_path, doc(tmp_path, {key: SIGNALS[key]}, tcp))
    assert f"services.web.zone_routing.{key}: needs an HTTP frontend" in text, text
    assert "tcp mode" in text


def test_the_address_works_in_tcp_mode(tmp_path: Path) -> None:
    tcp = {"frontend": [], "backend": []}
    config = load(tmp_path, doc(tmp_path, {"zone_of_address": {"127.0.0.3": "az3"}}, tcp))
    assert config.services["web"].zone_routing is not None


def test_signals_need_a_frontend_and_sticky_a_config_file(tmp_path: Path) -> None:
    document = doc(tmp_path, {"header": "X-Zone"})
    del document["services"]["web"]["haproxy"]["port"]
    text = refusal(tmp_path, document)
    assert "services.web.zone_routing.header: needs the service's own frontend" in text, text
    document = doc(tmp_path, {"sticky": "SRVZONE"})
    document["haproxy"] = {"do_writes": False, "do_reloads": False}
    text = refusal(tmp_path, document)
    assert "services.web.zone_routing.sticky: needs haproxy.config_file_path" in text, text


@pytest.mark.parametrize(
    ("routing", "expected"),
    [
        ({"sticky": "SRV ZONE"}, "zone_routing.sticky: 'SRV ZONE' is not a usable name"),
        ({"header": "X-Zone\n"}, "zone_routing.header:"),
        ({"zone_of_address": {"edge": "az1"}}, "key 'edge' is not an IP address"),
        ({"zone_of_address": {"127.0.0.2": "az9"}}, "zones ['az9'] are used but not listed"),
    ],
)
def test_bad_signals_are_refused(tmp_path: Path, routing: dict, expected: str) -> None:
    assert expected in refusal(tmp_path, doc(tmp_path, routing))


# --- which zones take named traffic ------------------------------------------------------

servers = st.lists(
    st.builds(
        ZoneServer,
        name=st.text("abcdef0123", min_size=1, max_size=4),
        zone=st.sampled_from(["az1", "az2", "az3"]),
        weight=st.one_of(st.none(), st.integers(0, 300)),
        healthy=st.booleans(),
    ),
    max_size=12,
    unique_by=lambda s: s.name,
)


@settings(max_examples=80, deadline=None)
@given(
    pool=servers,
    evacuated=st.sets(st.sampled_from(["az1", "az2", "az3"])),
    local=st.sampled_from([None, "az1", "az2"]),
)
def test_named_traffic_never_reaches_an_evacuated_zone_while_another_can_serve(
    pool: list[ZoneServer], evacuated: set[str], local: str | None
) -> None:
    decision = decide(pool, ZoneRouting(), local, evacuated)
    assert decision is not None
    opened = open_zones(decision)
    usable = {s.zone for s in pool if s.usable}
    assert opened <= usable, "a zone without a usable server takes nothing"
    if usable - evacuated:
        assert opened == usable - evacuated
    else:
        assert opened == usable, "every serving zone evacuated: deliver anyway"
    for zone in {"az1", "az2", "az3"}:
        members = [s for s in pool if s.zone == zone]
        weights = in_zone_weights(members, zone in opened)
        serving = {n for n, w in weights.items() if w > 0}
        assert serving == ({s.name for s in members if s.usable} if zone in opened else set())
        assert all(0 <= w <= 256 for w in weights.values())


def test_in_zone_weights_follow_nominal_weights() -> None:
    pool = [ZoneServer("a", "z", 10), ZoneServer("b", "z", 5), ZoneServer("c", "z", 0)]
    assert in_zone_weights(pool, True) == {"a": 256, "b": 128, "c": 0}
    assert in_zone_weights([ZoneServer("a", "z"), ZoneServer("b", "z")], True) == {
        "a": 256, "b": 256}  # fmt: skip
    assert in_zone_weights(pool, False) == {"a": 0, "b": 0, "c": 0}


# --- the zone backends ----------------------------------------------------------------------


def service(config: SynapseConfig, **counts: int) -> DesiredService:
    found = []
    for index, (zone, count) in enumerate(sorted(counts.items())):
        for i in range(count):
            host = f"10.0.{index}.{i + 1}"
            reg = Registration(host=host, port=80, name=f"{zone}-{i}", labels={"zone": zone})
            found.append(Found(reg, f"zk:{host}"))
    servers = [Server.from_registration(f.registration, f.origin) for f in found]
    return DesiredService("web", config.services["web"], servers)


def by_name(routed: list[DesiredService]) -> dict[str, DesiredService]:
    return {d.name: d for d in routed}


def test_listed_zones_get_backends_up_front_and_seen_zones_stay(tmp_path: Path) -> None:
    config = load(tmp_path, doc(tmp_path, SIGNALS))
    router = ZoneRouter("az1")
    routed = by_name(router.routed(service(config, az1=2, az2=2)))
    assert list(routed) == ["web", "web_zone_az1", "web_zone_az2", "web_zone_az3"]
    assert routed["web"].zones == ("az1", "az2", "az3")
    assert routed["web_zone_az3"].servers == []
    assert {s.weight for s in routed["web_zone_az2"].servers} == {256}
    assert not routed["web_zone_az1"].config.haproxy.has_frontend
    assert routed["web_zone_az1"].config.zone_routing is None
    assert routed["web_zone_az1"].backend_name == "web_zone_az1"
    # a zone that is not listed gets no backend: its server is in the service's backend
    grown = by_name(router.routed(service(config, az1=2, az2=2, az9=1)))
    assert grown["web"].zones == ("az1", "az2", "az3") and "web_zone_az9" not in grown
    assert len(grown["web"].servers) == 5
    # an unchanged zone backend is the very same object (the applier skips it)
    assert grown["web_zone_az3"] is routed["web_zone_az3"]


def test_without_a_list_seen_zones_get_backends_and_stay(tmp_path: Path) -> None:
    config = load(tmp_path, doc(tmp_path, {**SIGNALS, "zones": []}))
    router = ZoneRouter("az1")
    grown = by_name(router.routed(service(config, az1=2, az9=1)))
    assert grown["web"].zones == ("az1", "az2", "az9")
    lost = by_name(router.routed(service(config, az1=2)))
    assert lost["web"].zones == ("az1", "az2", "az9") and lost["web_zone_az9"].servers == []


def test_an_evacuated_zone_backend_gets_weight_zero(tmp_path: Path) -> None:
    config = load(tmp_path, doc(tmp_path, SIGNALS))
    router = ZoneRouter("az1", Evacuations().evacuate("az2"))
    routed = by_name(router.routed(service(config, az1=2, az2=2, az3=1)))
    assert {s.weight for s in routed["web_zone_az2"].servers} == {0}
    assert {s.weight for s in routed["web_zone_az1"].servers} == {256}
    # only az2 can serve: it takes named traffic (and all the rest) anyway
    only = by_name(router.routed(service(config, az2=2)))
    assert {s.weight for s in only["web_zone_az2"].servers} == {256}


def test_services_without_signals_get_no_zone_backends(tmp_path: Path) -> None:
    config = load(tmp_path, doc(tmp_path, {}))
    routed = ZoneRouter("az1").routed(service(config, az1=1, az2=1))
    assert [d.name for d in routed] == ["web"] and routed[0].zones == ()


# --- rendering --------------------------------------------------------------------------------


def frontend_of(tmp_path: Path, routing: dict, haproxy: dict | None = None) -> list[str]:
    config = load(tmp_path, doc(tmp_path, routing, haproxy))
    assert config.haproxy is not None
    routed = ZoneRouter("az1").routed(service(config, az1=1, az2=1))
    rendered = Renderer(config.haproxy).render(routed)
    assert {"web", "web_zone_az1", "web_zone_az2", "web_zone_az3"} <= set(rendered.backends)
    return [" ".join(line.split()) for line in rendered.parsed.sections["frontend web"]]


def test_frontend_picks_zone_backends_cookie_then_header_then_address(tmp_path: Path) -> None:
    lines = frontend_of(tmp_path, SIGNALS)
    picks = [line for line in lines if line.startswith("use_backend")]
    assert picks[0] == (
        "use_backend web_zone_az1 if { req.cook(SRVZONE) -m str az1 } { nbsrv(web_zone_az1) gt 0 }"
    )
    assert [p.split()[4] for p in picks] == ["req.cook(SRVZONE)"] * 3 + ["req.hdr(X-Zone)"] * 3 + [
        "dst"
    ]
    assert picks[-1] == "use_backend web_zone_az2 if { dst 127.0.0.2 } { nbsrv(web_zone_az2) gt 0 }"
    assert "bind 127.0.0.2:3000" in lines
    cookie = [line for line in lines if "Set-Cookie" in line]
    assert len(cookie) == 1 and '"SRVZONE=%[var(txn.synapse_zone_served)]; Path=/"' in cookie[0]
    mapped = map_path(tmp_path / "haproxy.cfg")
    assert any(f"map({mapped})" in line for line in lines)
    # the rules that read the request come before any use_backend (HAProxy warns otherwise)
    first_pick = lines.index(picks[0])
    assert all(i < first_pick for i, ln in enumerate(lines) if ln.startswith("http-request"))


def test_tcp_frontend_routes_by_address_only(tmp_path: Path) -> None:
    routing = {"zone_of_address": {"127.0.0.2": "az2", "127.0.0.3": "az3"}}
    lines = frontend_of(tmp_path, routing, {"frontend": [], "backend": []})
    assert [ln for ln in lines if not ln.startswith("bind")] == [
        "use_backend web_zone_az2 if { dst 127.0.0.2 } { nbsrv(web_zone_az2) gt 0 }",
        "use_backend web_zone_az3 if { dst 127.0.0.3 } { nbsrv(web_zone_az3) gt 0 }",
        "default_backend web",
    ]


def test_no_extra_bind_on_a_wildcard_address(tmp_path: Path) -> None:
    lines = frontend_of(tmp_path, SIGNALS, {"bind_address": "0.0.0.0"})
    assert [ln for ln in lines if ln.startswith("bind")] == ["bind 0.0.0.0:3000"]


# --- the server-zone map ----------------------------------------------------------------------


def test_map_entries_and_runtime_commands(tmp_path: Path) -> None:
    config = load(tmp_path, doc(tmp_path, SIGNALS))
    routed = ZoneRouter("az1").routed(service(config, az1=1, az2=1))
    entries = wanted_entries(routed)
    assert entries == {"web/az1-0_10.0.0.1:80": "az1", "web/az2-0_10.0.1.1:80": "az2"}
    assert wanted_entries([routed[1]]) is None, "a zone backend has no cookie of its own"
    path = Path("/m.map")
    old = {"web/a": "az1", "web/b": "az2", "web/c": "az3"}
    new = {"web/a": "az1", "web/b": "az3", "web/d": "az1"}
    assert runtime_commands(old, new, path) == [
        "add map /m.map web/d az1", "set map /m.map web/b az3", "del map /m.map web/c"]  # fmt: skip


def test_zone_routing_without_signals_builds_no_map(tmp_path: Path) -> None:
    config = load(tmp_path, doc(tmp_path, {"header": "X-Zone"}))
    routed = ZoneRouter("az1").routed(service(config, az1=1))
    assert wanted_entries(routed) is None


def test_status_shows_the_signals_and_the_zones_taking_named_traffic(tmp_path: Path) -> None:
    config = load(tmp_path, doc(tmp_path, SIGNALS))
    router = ZoneRouter("az1", Evacuations().evacuate("az2"))
    router.routed(service(config, az1=2, az2=2))
    web = router.status()["web"]
    assert web["signals"] == SIGNALS
    assert web["named"] == ["az1"] and web["mode"] == "local"
    plain = load(tmp_path, doc(tmp_path, {}))
    router.routed(service(plain, az1=1))
    assert "signals" not in router.status()["web"]


def test_a_zone_backend_named_like_another_service_is_refused(tmp_path: Path) -> None:
    document = doc(tmp_path, {"header": "X-Zone"})
    document["services"]["other"] = {
        "discovery": {"method": "base"},
        "haproxy": {"backend_name": "web_zone_az2"},
    }
    text = refusal(tmp_path, document)
    assert "services.web.zone_routing: the backend of zone az2, 'web_zone_az2'" in text, text


def test_status_page_shows_the_signals_in_one_line() -> None:
    zones = {"local_zone": "az1", "mode": "local", "evacuated": [], "signals": SIGNALS}
    assert zone_mode(zones) == {
        "mode": "local", "local": "az1", "evacuated": [],
        "sig": "cookie SRVZONE · header X-Zone · 1 address"}  # fmt: skip
    assert "sig" not in (zone_mode({"mode": "local"}) or {})


def test_a_zone_backend_named_like_another_service_name_is_refused(tmp_path: Path) -> None:
    document = doc(tmp_path, {"header": "X-Zone"})
    document["services"]["web_zone_az3"] = {
        "discovery": {"method": "base"},
        "haproxy": {"backend_name": "elsewhere"},
    }
    text = refusal(tmp_path, document)
    assert "the backend of zone az3, 'web_zone_az3', is the name of service 'web_zone_az3'" in text


def test_a_record_zone_never_takes_a_configured_name(tmp_path: Path) -> None:
    # Zones seen in the records: a backend named like another service (its name or its
    # backend) would overwrite that service's state on the HAProxy side.
    document = doc(tmp_path, {**SIGNALS, "zones": []})
    base = {"discovery": {"method": "base"}}
    document["services"]["web_zone_evil"] = {**base, "haproxy": {"backend_name": "elsewhere"}}
    document["services"]["other"] = {**base, "haproxy": {"backend_name": "web_zone_az9"}}
    config = load(tmp_path, document)
    metrics = SynapseMetrics(CollectorRegistry())
    router = ZoneRouter("az1", metrics=metrics)
    router.configure(config)
    routed = by_name(router.routed(service(config, az1=1, az9=1, evil=2)))
    assert list(routed) == ["web", "web_zone_az1", "web_zone_az2"]
    assert routed["web"].zones == ("az1", "az2")
    assert len(routed["web"].servers) == 4, "their servers stay in the service's backend"
    again = by_name(router.routed(service(config, az1=2, az9=1, evil=2)))
    assert list(again) == list(routed)
    refused = metrics.registry.get_sample_value(
        "synapse_zone_backends_refused_total", {"service": "web", "reason": "name_clash"}
    )
    assert refused == 2, "counted once per zone"


def refused(metrics: SynapseMetrics, reason: str) -> float | None:
    return metrics.registry.get_sample_value(
        "synapse_zone_backends_refused_total", {"service": "web", "reason": reason}
    )


def test_unlisted_record_zones_are_counted_once(tmp_path: Path) -> None:
    config = load(tmp_path, doc(tmp_path, SIGNALS))
    metrics = SynapseMetrics(CollectorRegistry())
    router = ZoneRouter("az1", metrics=metrics)
    for count in (1, 2):
        routed = by_name(router.routed(service(config, az1=count, az8=1, az9=1)))
        assert set(routed) == {"web", "web_zone_az1", "web_zone_az2", "web_zone_az3"}
    assert refused(metrics, "not_listed") == 2


def test_record_zones_are_capped_and_idle_ones_forgotten_with_the_next_change(
    tmp_path: Path,
) -> None:
    config = load(tmp_path, doc(tmp_path, {"header": "X-Zone", "zones": []}))
    metrics = SynapseMetrics(CollectorRegistry())
    router = ZoneRouter("az1", metrics=metrics)
    now = [1000.0]
    router.backends.clock = lambda: now[0]
    many = {f"z{i:02}": 1 for i in range(MAX_RECORD_ZONES + 3)}
    routed = router.routed(service(config, **many))
    assert len(routed[0].zones) == MAX_RECORD_ZONES and len(routed) == MAX_RECORD_ZONES + 1
    assert len(routed[0].servers) == MAX_RECORD_ZONES + 3, "every server stays served"
    assert refused(metrics, "cap") == 3
    # the zones empty out; past FORGET_AFTER they stay until something else changes the
    # service's backends (dropping them alone would cost a reload)
    kept = router.routed(service(config, z00=1))[0].zones
    assert len(kept) == MAX_RECORD_ZONES
    now[0] += FORGET_AFTER + 1
    assert router.routed(service(config, z00=2))[0].zones == kept
    # a new zone is a reload anyway: the idle ones go with it
    assert router.routed(service(config, z00=2, fresh=1))[0].zones == ("fresh", "z00")


def test_the_admin_port_on_a_zone_address_is_a_clash(tmp_path: Path) -> None:
    document = doc(tmp_path, {"zone_of_address": {"127.0.0.2": "az2", "::2": "az3"}})
    document["services"]["web"]["haproxy"]["bind_address"] = "127.0.0.1"
    document["admin"] = {"host": "127.0.0.4", "port": 3000}
    config = load(tmp_path, document)
    assert admin_port_clashes(config) == []
    config.admin.host = "127.0.0.2"
    [line] = admin_port_clashes(config)
    assert "services.web.zone_routing.zone_of_address: HAProxy binds 127.0.0.2:3000" in line
    config.admin.host = "::2"
    [line] = admin_port_clashes(config)
    assert "HAProxy binds [::2]:3000" in line
    document["admin"] = {"host": "127.0.0.2", "port": 3000}
    assert "clashes with services.web.zone_routing.zone_of_address" in refusal(tmp_path, document)


class FlakyRuntime:
    """A runtime client whose ``show map`` fails ``failures`` times, then answers."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.sent: list[str] = []

    async def execute(self, command: str) -> str:
        if self.failures:
            self.failures -= 1
            raise SocketUnavailable("/run/haproxy.sock: no answer")
        return "0x1 web/a az1\n"

    async def run_ops(self, ops: list[Any]) -> list[str | None]:
        self.sent += [op.command for op in ops]
        return [None] * len(ops)


async def test_a_zone_map_that_cannot_be_read_is_counted_and_catches_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry = CollectorRegistry()
    runtime = FlakyRuntime(failures=2)
    sync = ZoneMapSync([runtime], HAProxyMetrics(registry))  # type: ignore[list-item]
    sync.configure(tmp_path / "haproxy.cfg")
    sync.wanted = {"web/a": "az1", "web/b": "az2"}
    for _ in range(2):
        assert await sync.sync() == ([], [])
    failed = registry.get_sample_value(
        "synapse_haproxy_runtime_command_errors_total", {"kind": "map_show"}
    )
    assert failed == 2
    logged = [r for r in caplog.records if r.getMessage() == "haproxy_zone_map_read_failed"]
    assert len(logged) == 1, "logged once until it answers again"
    applied, failures = await sync.sync()
    path = map_path(tmp_path / "haproxy.cfg")
    assert applied == [f"add map {path} web/b az2"] and failures == []
    assert path.read_text().splitlines()[1:] == ["web/a az1", "web/b az2"]


async def test_a_zone_map_file_that_cannot_be_written_fails_no_apply(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A full disk while a server joins: HAProxy's map takes the change, the file write's
    OSError is said once and counted, not raised (it failed every later apply, everyone's
    changes backing off up to 30 s); the next apply writes the file once it can."""
    import errno

    from synapse.haproxy import zone_map

    caplog.set_level(logging.INFO, logger="synapse.haproxy")
    registry = CollectorRegistry()
    runtime = FlakyRuntime(failures=0)
    sync = ZoneMapSync([runtime], HAProxyMetrics(registry))  # type: ignore[list-item]
    sync.configure(tmp_path / "haproxy.cfg")
    sync.wanted = {"web/a": "az1", "web/b": "az2"}
    write_atomic = zone_map.write_atomic

    def full(path: Path, data: str) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(zone_map, "write_atomic", full)
    path = map_path(tmp_path / "haproxy.cfg")
    assert await sync.sync() == ([f"add map {path} web/b az2"], [])
    assert await sync.sync() == ([], [])  # the next apply: nothing to send, the file owed
    errors = {"map": "zones"}
    assert registry.get_sample_value("synapse_haproxy_map_file_write_errors_total", errors) == 2
    assert not path.exists()
    monkeypatch.setattr(zone_map, "write_atomic", write_atomic)
    assert await sync.sync() == ([], [])
    assert path.read_text().splitlines()[1:] == ["web/a az1", "web/b az2"]
    said = [r.getMessage() for r in caplog.records]
    assert said.count("haproxy_map_file_write_failed") == 1, said
    assert said.count("haproxy_map_file_written") == 1, said


def test_in_managed_mode_a_zone_backend_fails_over_to_the_other_zones(tmp_path: Path) -> None:
    """A request naming a zone that just died is retried on that zone backend's backups:
    the other zones' servers, weighted as the decision would be without that zone."""
    document = doc(tmp_path, SIGNALS)
    document["haproxy"] = {"config_file_path": str(tmp_path / "haproxy.cfg"), "managed": {}}
    config = load(tmp_path, document)
    router = ZoneRouter("az1")
    router.configure(config)
    routed = by_name(router.routed(service(config, az1=2, az2=2, az3=6)))

    def weights(backend: str, backup: bool) -> dict[str, int]:
        servers = routed[backend].servers
        return {s.name.split("_")[0]: s.weight or 0 for s in servers if s.backup == backup}

    def zone_total(found: dict[str, int], zone: str) -> int:
        return sum(w for name, w in found.items() if name.startswith(zone))

    az1 = routed["web_zone_az1"]
    assert sorted(weights("web_zone_az1", False)) == ["az1-0", "az1-1"]
    spill = weights("web_zone_az1", True)  # az1 gone: the even spill over az2 and az3
    assert len(spill) == 8 and zone_total(spill, "az2") == zone_total(spill, "az3") == 512
    home = weights("web_zone_az2", True)  # az2 gone: the local zone serves
    assert zone_total(home, "az1") == 512 and zone_total(home, "az3") == 0
    assert "option allbackups" in az1.config.haproxy.backend
    assert az1.config.haproxy.observe == ZONE_OBSERVE  # HAProxy finds the dead zone
    # HAProxy's checks turned off: nothing would find a dead zone, so no backups either
    document["services"]["web"]["haproxy"]["health_check"] = {"enabled": False}
    off = load(tmp_path, document)
    router.configure(off)
    plain = by_name(router.routed(service(off, az1=2, az2=2, az3=6)))
    assert not any(s.backup for s in plain["web_zone_az1"].servers)
    assert "option allbackups" not in plain["web_zone_az1"].config.haproxy.backend
