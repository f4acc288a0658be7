"""The status page's data: summary, servers, zones, traffic rates, last change; and
synapse_server_info. (The page itself runs in a real browser: tests/system.)"""

from __future__ import annotations

import asyncio
from importlib import resources

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from synapse.config import ServiceConfig
from synapse.haproxy.running import RunningServer
from synapse.haproxy.status import backend_states
from synapse.haproxy.traffic import SHOW_SERVERS, Traffic, TrafficSampler, parse_show_stat
from synapse.model import Server
from synapse.selection import Selection
from synapse.server_info import ServerInfoCollector
from synapse.status import merge_service_status
from synapse.status_page import ChangeTracker, page_data, service_data, stats_url, zone_split

A = {"name": "a_10.0.0.1:80", "host": "10.0.0.1", "port": 80, "weight": None,
     "origin": "zookeeper:/web/a_0000000001"}  # fmt: skip
B = {"name": "b_10.0.0.2:80", "host": "10.0.0.2", "port": 80, "weight": None,
     "origin": "default"}  # fmt: skip


def status(states: dict[str, str], **service: object) -> dict:
    services = {
        "web": {"origin": "discovery", "servers": [A, B], "haproxy_disabled": False, **service},
        "off": {"origin": "default_servers", "servers": [], "haproxy_disabled": True},
    }
    running = {n: {"state": s, "weight": 1, "address": "x"} for n, s in states.items()}
    watchers = {"web": {"method": "zookeeper", "connected": True, "skipped_records": 2}}
    haproxy = {"mode": "managed", "reloads": 3, "backends": {"web": running}}
    merged = merge_service_status(services, watchers, haproxy)
    return {"services": merged, "haproxy": haproxy, "host": "h", "reconciler": {}}


def test_summary_servers_and_traffic_of_a_service() -> None:
    traffic = {("web", A["name"]): Traffic(2.5, 0.25, 100, 7, 30, "UP")}
    zones = {("web", A["name"]): "az1", ("web", B["name"]): "az2"}
    data = page_data(status({A["name"]: "UP", B["name"]: "DOWN"}), traffic, zones,
                     ChangeTracker(), now=1000.0)  # fmt: skip
    web, off = data["services"][1], data["services"][0]
    assert (web["n"], web["up"], web["t"], web["hr"], web["w"]["sk"]) == ("web", 1, 2, True, 2)
    assert web["s"][0] == [A["name"], "10.0.0.1:80", "UP", 1, A["origin"], "az1",
                           2.5, 0.25, 7, 30]  # fmt: skip
    assert web["s"][1][2] == "DOWN" and web["s"][1][6:] == [None, None, None, None]
    # no zone routing data: the split comes from the servers' zone labels
    assert web["z"] == [{"z": "az1", "up": 1, "t": 1}, {"z": "az2", "up": 0, "t": 1}]
    assert web["ch"] == 970.0  # HAProxy's lastchg: 30 s before now
    assert (off["hd"], off["hr"], off["t"], off["z"]) == (True, False, 0, None)
    assert data["haproxy"]["reloads"] == 3 and "backends" not in data["haproxy"]


def test_zone_routing_data_is_used_when_present() -> None:
    az1 = {"zone": "az1", "servers": 2, "usable": 1, "active": True, "evacuated": False}
    az2 = {"zone": "az2", "servers": 1, "usable": 1, "active": False, "evacuated": True}
    zones = {"mode": "local", "zones": [az1, az2]}
    data = page_data(status({}, zones=zones), {}, {}, ChangeTracker(), now=1.0)
    none = {"share": None, "why": None}
    assert data["services"][1]["z"] == [
        {"z": "az1", "up": 1, "t": 2, "active": True, "evacuated": False, **none},
        {"z": "az2", "up": 1, "t": 1, "active": False, "evacuated": True, **none},
    ]
    keyed = {"az1": {"servers": ["x", "y"], "up": 2}}
    assert zone_split(keyed) == [
        {"z": "az1", "up": 2, "t": 2, "active": None, "evacuated": None, **none}
    ]
    assert zone_split("nonsense") is None


def test_last_change_is_when_the_servers_or_their_states_changed() -> None:
    tracker = ChangeTracker()
    first = page_data(status({A["name"]: "UP"}), {}, {}, tracker, now=10.0)
    assert first["services"][1]["ch"] is None  # nothing seen changing yet
    same = page_data(status({A["name"]: "UP"}), {}, {}, tracker, now=20.0)
    assert same["services"][1]["ch"] is None
    down = page_data(status({A["name"]: "DOWN"}), {}, {}, tracker, now=30.0)
    assert down["services"][1]["ch"] == 30.0
    later = page_data(status({A["name"]: "DOWN"}), {}, {}, tracker, now=40.0)
    assert later["services"][1]["ch"] == 30.0


def test_the_page_template_is_packaged_and_writes_values_as_text() -> None:
    page = (resources.files("synapse.templates") / "status.html").read_text()
    assert "/status/page.json" in page and "innerHTML =" not in page
    assert len(page.encode()) < 50_000
    assert stats_url("127.0.0.1:8404", "/stats") == "http://127.0.0.1:8404/stats"
    assert stats_url("*:8404", "/s") == "http://127.0.0.1:8404/s"


STAT = (
    "# pxname,svname,scur,stot,hrsp_5xx,lastchg,status\n"
    "web,a,0,{a},{e},12,UP 1/3\n"
    "web,BACKEND,0,0,0,12,UP\n"
)


def test_traffic_rates_come_from_two_samples() -> None:
    answers = [STAT.format(a=100, e=5), STAT.format(a=110, e=5), STAT.format(a=3, e=0)]
    clock = [0.0]
    sent = []

    async def request(path: str, command: str, timeout: float) -> str:
        sent.append((path, command))
        return answers.pop(0)

    sampler = TrafficSampler("/run/h.sock", request=request, clock=lambda: clock[0])

    async def scenario() -> list[dict]:
        out = [await sampler.traffic()]
        clock[0] = 0.5  # younger than min_interval: the same answer, no command
        out.append(await sampler.traffic())
        clock[0] = 2.0
        out.append(await sampler.traffic())
        clock[0] = 4.0  # counters went down (a new worker): no rate
        out.append(await sampler.traffic())
        return out

    first, cached, second, reset = asyncio.run(scenario())
    assert sent == [("/run/h.sock", SHOW_SERVERS)] * 3
    assert first[("web", "a")] == Traffic(None, None, 100, 5, 12, "UP")
    assert cached is first
    assert second[("web", "a")] == Traffic(5.0, 0.0, 110, 5, 12, "UP")
    assert reset[("web", "a")].req_rate is None
    assert set(parse_show_stat(STAT.format(a=1, e=1))) == {("web", "a"), ("web", "BACKEND")}


def test_traffic_without_haproxy_is_empty_with_the_error() -> None:
    async def request(path: str, command: str, timeout: float) -> str:
        raise ConnectionRefusedError("refused")

    sampler = TrafficSampler("/run/none.sock", request=request)
    assert asyncio.run(sampler.traffic()) == {}
    assert sampler.error is not None and "refused" in sampler.error


def test_server_info_has_origin_kind_and_zone_and_is_bounded() -> None:
    config = ServiceConfig.model_validate(
        {
            "discovery": {"method": "base"},
            "haproxy": {"backend_name": "be_web"},
            "zone_routing": {"label": "az"},
        }
    )
    servers = tuple(
        Server(f"s{i}", "10.0.0.1", 80 + i, origin=f"zookeeper:/web/n_{i}",
               labels=(("az", "eu-1a"),) if i == 0 else ())
        for i in range(3)
    )  # fmt: skip
    registry = CollectorRegistry()
    selections = {"web": Selection(servers)}
    registry.register(ServerInfoCollector(lambda: (selections, {"web": config}), limit=2))
    families = {
        f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())
    }
    samples = families["synapse_server_info"].samples
    common = {"service": "web", "proxy": "be_web", "origin": "zookeeper"}
    assert [s.labels for s in samples] == [
        {**common, "server": "s0", "zone": "eu-1a"},
        {**common, "server": "s1", "zone": "unknown"},
    ]
    assert families["synapse_server_info_skipped"].samples[0].value == 1


def test_the_live_state_from_show_stat_wins_over_the_last_runtime_read() -> None:
    traffic = {("web", B["name"]): Traffic(None, None, 0, 0, 1, "DOWN")}
    data = page_data(status({A["name"]: "UP", B["name"]: "UP"}), traffic, {}, ChangeTracker(), 5.0)
    web = data["services"][1]
    assert [row[2] for row in web["s"]] == ["UP", "DOWN"] and web["up"] == 1


def test_a_backend_not_read_since_a_reload_shows_live_states_only() -> None:
    """Right after a reload the page has no servers of the backend from synapse's view (it
    would be the previous process's): states come from `show stat` alone, and it is marked."""
    services = {"web": {"origin": "discovery", "servers": [A, B], "haproxy_disabled": False}}
    haproxy = {"mode": "managed", "backends": {}, "unread_backends": ["web"]}
    merged = merge_service_status(services, {}, haproxy)
    status = {"services": merged, "haproxy": haproxy}
    traffic = {("web", A["name"]): Traffic(None, None, 0, 0, 1, "UP")}
    web = page_data(status, traffic, {}, ChangeTracker(), 5.0)["services"][0]
    assert (web["hr"], web["ur"], web["up"]) == (True, True, 1)
    assert [row[2] for row in web["s"]] == ["UP", None]  # B: unknown, not the old state
    read = merge_service_status(services, {}, {"backends": {"web": {}}})
    assert page_data({"services": read}, {}, {}, ChangeTracker(), 5.0)["services"][0]["ur"] is False


def test_ipv6_addresses_are_bracketed_on_the_page_and_in_the_stats_link() -> None:
    """fd00::10:8081 read as one address (IPv6 review): brackets, as HAProxy writes them."""
    assert stats_url("::1:8404", "/stats") == "http://[::1]:8404/stats"
    assert stats_url(":::8404", "/stats") == "http://127.0.0.1:8404/stats"
    server = RunningServer("b", "s", 1, "fd00::10", 8081)
    assert backend_states({"b": {"s": server}})["b"]["s"]["address"] == "[fd00::10]:8081"


def test_a_service_served_otherwise_than_its_config_says_is_its_rows_problem() -> None:
    """/health's ``degraded`` lines of a service (a held restart, a previous list kept) are
    on the page too: round 28 left the page silent about them."""
    kept = "the discovery lists no servers; serving the previous list (2 servers, ...) since 3 s"
    view = {"servers": [], "degraded": [kept], "label_filters_match_nothing": None}
    data, _ = service_data("web", view, {}, {})
    assert data["w"]["e"] == kept
    data, _ = service_data("web", {"servers": []}, {}, {})
    assert data["w"]["e"] is None
