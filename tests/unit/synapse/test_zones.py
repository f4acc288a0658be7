"""The zone decision (synapse/zones.py): pure, examples and properties.

Tolerance of even spill, derived from how weights are made (zones._weights): with the
largest per-server target mapped to 256, server s has an exact weight x_s in (0, 256];
each zone's exact total X_z is apportioned by largest remainder, then every server is
floored at 1. So a zone's integer total W_z is within one step per server of X_z:
|W_z - X_z| <= n_z. Even spill makes X_z the same (X) for every active zone, hence
|W_z - W_z'| <= n_z + n_z'. For the realised share W_z / W against the target X_z / X
(W = sum W_z, |W - X| <= N servers in active zones):
    |W_z/W - X_z/X| <= (|W_z - X_z| + (X_z/X) |W - X|) / W <= (n_z + target_z * N) / W.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from synapse.config import ServiceConfig
from synapse.model import DesiredService, Server
from synapse.zone_config import ZoneRouting
from synapse.zones import MAX_WEIGHT, ZoneServer, decide, decide_service, zone_of, zone_servers

ZONES = ["az1", "az2", "az3", "az4", "unknown"]


def fleet(layout: dict[str, int], down: set[str] = frozenset()) -> list[ZoneServer]:
    """layout zone -> server count; servers of the zones in ``down`` are unhealthy."""
    return [
        ZoneServer(f"{zone}-{i}", zone, healthy=zone not in down)
        for zone, count in layout.items()
        for i in range(count)
    ]


def zone_totals(decision, servers: list[ZoneServer]) -> dict[str, int]:
    weights = decision.weight_of
    totals: dict[str, int] = {}
    for s in servers:
        totals[s.zone] = totals.get(s.zone, 0) + weights[s.name]
    return totals


# --- examples: the three zones with 2/2/6 servers -------------------------------


def test_local_zone_serves_everything_while_healthy() -> None:
    servers = fleet({"az1": 2, "az2": 2, "az3": 6})
    decision = decide(servers, ZoneRouting(), "az1")
    assert decision.mode == "local"
    assert decision.shares == {"az1": 1.0, "az2": 0.0, "az3": 0.0}
    assert zone_totals(decision, servers) == {"az1": 512, "az2": 0, "az3": 0}


def test_local_zone_lost_spills_evenly_per_zone_not_per_server() -> None:
    servers = fleet({"az1": 2, "az2": 2, "az3": 6}, down={"az1"})
    decision = decide(servers, ZoneRouting(), "az1")
    assert decision.mode == "spill"
    assert decision.active_zones == ("az2", "az3")
    assert decision.shares == {"az1": 0.0, "az2": 0.5, "az3": 0.5}
    weights = decision.weight_of
    assert weights["az2-0"] == weights["az2-1"] == 256
    assert sorted(weights[f"az3-{i}"] for i in range(6)) == [85, 85, 85, 85, 86, 86]
    assert decision.to_status()["share"] == {"az1": 0.0, "az2": 0.5, "az3": 0.5}


def test_weighted_spill_follows_server_weights() -> None:
    servers = fleet({"az1": 2, "az2": 2, "az3": 6}, down={"az1"})
    decision = decide(servers, ZoneRouting(spill="weighted"), "az1")
    assert decision.shares == {"az1": 0.0, "az2": 0.25, "az3": 0.75}


def test_local_zone_back_takes_everything_again() -> None:
    routing = ZoneRouting()
    lost = decide(fleet({"az1": 2, "az2": 2, "az3": 6}, down={"az1"}), routing, "az1")
    back = decide(fleet({"az1": 2, "az2": 2, "az3": 6}), routing, "az1")
    assert lost.mode == "spill" and back.mode == "local"
    assert back.shares["az1"] == 1.0


def test_evacuating_a_spill_zone_moves_its_share_to_the_rest() -> None:
    servers = fleet({"az1": 2, "az2": 2, "az3": 6}, down={"az1"})
    decision = decide(servers, ZoneRouting(), "az1", evacuated={"az3"})
    assert decision.shares == {"az1": 0.0, "az2": 1.0, "az3": 0.0}
    assert decision.to_status()["zones"]["az3"]["why"] == "evacuated"


def test_evacuating_the_local_zone_spills_and_config_evacuate_counts() -> None:
    servers = fleet({"az1": 2, "az2": 2, "az3": 6})
    decision = decide(servers, ZoneRouting(evacuate=["az1"]), "az1")
    assert decision.mode == "spill"
    assert decision.evacuated == {"az1"}
    assert decision.shares == {"az1": 0.0, "az2": 0.5, "az3": 0.5}


def test_all_serving_zones_evacuated_still_delivers_and_says_so() -> None:
    servers = fleet({"az1": 2, "az2": 2, "az3": 6}, down={"az1"})
    decision = decide(servers, ZoneRouting(), "az1", evacuated={"az2", "az3"})
    assert decision.mode == "evacuated_fallback"
    assert decision.shares == {"az1": 0.0, "az2": 0.5, "az3": 0.5}
    assert "evacuated, but serving" in decision.to_status()["zones"]["az2"]["why"]


def test_min_local_spills_a_thin_local_zone_but_keeps_it_as_last_resort() -> None:
    routing = ZoneRouting(min_local=2)
    servers = fleet({"az1": 2, "az2": 2})
    half = [s if s.name != "az1-1" else ZoneServer(s.name, s.zone, healthy=False) for s in servers]
    assert decide(servers, routing, "az1").mode == "local"
    assert decide(half, routing, "az1").shares == {"az1": 0.0, "az2": 1.0}
    only_local = [s for s in half if s.zone == "az1"]
    decision = decide(only_local, routing, "az1")
    assert decision.mode == "local_below_min"
    assert decision.weight_of == {"az1-0": 256, "az1-1": 0}


def test_no_local_zone_spreads_over_all_zones() -> None:
    servers = fleet({"az1": 1, "az2": 3})
    for local in (None, "az9"):
        decision = decide(servers, ZoneRouting(), local)
        assert decision.mode == "spill"
        assert decision.shares == {"az1": 0.5, "az2": 0.5}


def test_nothing_healthy_means_no_traffic_and_no_zone_active() -> None:
    decision = decide(fleet({"az1": 2}, down={"az1"}), ZoneRouting(zones=["az1", "az2"]), "az1")
    assert decision.mode == "no_healthy_servers"
    assert decision.weight_of == {"az1-0": 0, "az1-1": 0}
    assert decision.shares == {"az1": 0.0, "az2": 0.0}  # az2 listed in `zones`, no servers


def test_nominal_weights_split_inside_the_local_zone_and_weight_0_is_no_traffic() -> None:
    servers = [
        ZoneServer("a", "az1", weight=100),
        ZoneServer("b", "az1", weight=50),
        ZoneServer("c", "az1", weight=0),
    ]
    decision = decide(servers, ZoneRouting(), "az1")
    assert decision.weight_of == {"a": 256, "b": 128, "c": 0}


def test_no_zone_routing_leaves_weights_alone() -> None:
    assert decide(fleet({"az1": 2}), None, "az1") is None


def test_zone_of_reads_the_label_and_distrusts_odd_values() -> None:
    assert zone_of({"zone": "az1"}) == "az1"
    assert zone_of((("region", "eu"),), "region") == "eu"
    assert zone_of({}) == "unknown"
    assert zone_of({"zone": "az1;acl x"}) == "unknown"
    assert zone_of({"zone": "x" * 65}) == "unknown"


def test_zone_servers_from_model_servers() -> None:
    servers = [
        Server("a", "10.0.0.1", 80, labels=(("zone", "az1"),)),
        Server("b", "10.0.0.2", 80, weight=5),
    ]
    assert zone_servers(servers, down={"b"}) == [
        ZoneServer("a", "az1", None, True),
        ZoneServer("b", "unknown", 5, False),
    ]


def test_decide_service_reads_labels_and_config() -> None:
    config = ServiceConfig.model_validate(
        {"discovery": {"method": "base"}, "zone_routing": {"label": "az"}}
    )
    servers = [
        Server("a", "10.0.0.1", 80, labels=(("az", "az1"),)),
        Server("b", "10.0.0.2", 80, labels=(("az", "az2"),)),
    ]
    service = DesiredService("web", config, servers)
    assert decide_service(service, "az1").weight_of == {"a": 256, "b": 0}
    assert decide_service(service, "az1", down={"a"}).weight_of == {"a": 0, "b": 256}
    assert decide_service(service, "az1", evacuated={"az1"}).weight_of == {"a": 0, "b": 256}
    plain = DesiredService("web", ServiceConfig.model_validate({"discovery": {"method": "base"}}))
    assert decide_service(plain, "az1") is None


# --- properties ---------------------------------------------------------------------------

server_st = st.builds(
    ZoneServer,
    name=st.just(""),  # replaced by a unique name below
    zone=st.sampled_from(ZONES),
    weight=st.one_of(st.none(), st.integers(0, 256)),
    healthy=st.booleans(),
)
cases = st.tuples(
    st.lists(server_st, max_size=40),
    st.sampled_from(["even", "weighted"]),
    st.integers(0, 4),
    st.one_of(st.none(), st.sampled_from(ZONES)),
    st.sets(st.sampled_from(ZONES)),
)


def build(case):
    raw, spill, min_local, local, evacuated = case
    servers = [ZoneServer(f"s{i:02d}", s.zone, s.weight, s.healthy) for i, s in enumerate(raw)]
    routing = ZoneRouting(spill=spill, min_local=min_local)
    return servers, routing, local, evacuated, decide(servers, routing, local, evacuated)


@settings(max_examples=150, deadline=None)
@given(cases)
def test_properties_of_every_decision(case) -> None:
    servers, routing, local, evacuated, decision = build(case)
    weights = decision.weight_of
    usable = [s for s in servers if s.usable]
    # weights in HAProxy's range, and only usable servers get traffic
    assert set(weights) == {s.name for s in servers}
    assert all(0 <= w <= MAX_WEIGHT for w in weights.values())
    assert all(weights[s.name] == 0 for s in servers if not s.usable)
    # traffic somewhere whenever any server is usable; shares add up to 100 %
    if usable:
        assert sum(weights.values()) > 0
        assert math.isclose(sum(decision.shares.values()), 1.0)
        # every usable server of an active zone gets traffic
        active = set(decision.active_zones)
        assert all(weights[s.name] >= 1 for s in usable if s.zone in active)
        assert all(weights[s.name] == 0 for s in servers if s.zone not in active)
    else:
        assert decision.mode == "no_healthy_servers"
        assert sum(decision.shares.values()) == 0
    # no traffic to an evacuated zone while a zone that is not evacuated can serve
    if {s.zone for s in usable} - set(evacuated):
        assert all(weights[s.name] == 0 for s in servers if s.zone in evacuated)
    # determinism, whatever order the servers come in
    again = decide(list(reversed(servers)), routing, local, evacuated)
    assert again == decision


zone_st = st.lists(
    st.tuples(st.one_of(st.none(), st.integers(0, 256)), st.booleans()), min_size=1, max_size=12
)
even_cases = st.tuples(
    st.lists(zone_st, min_size=2, max_size=5),
    st.sampled_from([None, "lost", "evacuated"]),  # what happened to the local zone az0
)


def even_spill(case):
    """Zones az1.. each with at least one usable server; the local zone az0 cannot serve."""
    zones, local_state = case
    servers = []
    for z, members in enumerate(zones, start=1):
        for i, (weight, healthy) in enumerate(members):
            if i == 0:  # every zone can serve
                weight, healthy = (weight or None), True
            servers.append(ZoneServer(f"az{z}-{i:02d}", f"az{z}", weight, healthy))
    local, evacuated = None, set()
    if local_state is not None:
        local = "az0"
        servers.append(ZoneServer("az0-00", "az0", None, local_state != "lost"))
        evacuated = {"az0"} if local_state == "evacuated" else set()
    return servers, decide(servers, ZoneRouting(spill="even"), local, evacuated)


@settings(max_examples=120, deadline=None)
@given(even_cases)
def test_even_spill_shares_are_equal_within_one_step_per_server(case) -> None:
    servers, decision = even_spill(case)
    active = decision.active_zones
    assert decision.mode == "spill" and "az0" not in active
    assert len(active) == len({s.zone for s in servers} - {"az0"}) >= 2
    totals = zone_totals(decision, servers)
    count = {z: sum(1 for s in servers if s.zone == z and s.usable) for z in active}
    for a in active:
        for b in active:
            assert abs(totals[a] - totals[b]) <= count[a] + count[b]
    whole, n_all = sum(totals[z] for z in active), sum(count.values())
    for z in active:
        target = 1 / len(active)
        assert decision.to_status()["zones"][z]["target"] == pytest.approx(target, abs=1e-4)
        tolerance = (count[z] + target * n_all) / whole
        assert abs(decision.shares[z] - target) <= tolerance + 1e-12


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 8), min_size=2, max_size=4))
def test_even_spill_is_exact_to_a_percent_for_realistic_zone_sizes(sizes: list[int]) -> None:
    """Zones of up to 8 servers, local zone lost: every zone within 1 % of an equal share."""
    layout = {f"az{i + 2}": n for i, n in enumerate(sizes)}
    servers = fleet({"az1": 2, **layout}, down={"az1"})
    decision = decide(servers, ZoneRouting(), "az1")
    for zone in layout:
        assert decision.shares[zone] == pytest.approx(1 / len(layout), abs=0.01)
