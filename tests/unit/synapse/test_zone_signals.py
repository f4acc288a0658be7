"""Zone signals (docs/zone-routing.md): the sticky cookie, the zone header and the
arrival address. Config checks, the zone backends (synapse/zone_backends.py) and their
frontend lines (synapse/haproxy/zone_lines.py); the server-zone map and the rest:
test_zone_signals_map.py. Pure: no process, no socket."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smartstack.configfile import ConfigError
from smartstack.record import Registration
from synapse.config import SynapseConfig, load_synapse_config
from synapse.haproxy.render import Renderer
from synapse.haproxy.zone_map import map_path
from synapse.model import DesiredService, Found, Server
from synapse.zone_apply import ZoneRouter
from synapse.zone_backends import in_zone_weights, open_zones
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
