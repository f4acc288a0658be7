"""Runtime zone evacuations (synapse/zone_state.py) and where they are kept (the state file)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from synapse.state_cache import StateCache
from synapse.zone_state import Evacuations, RestoreConflict


def test_evacuate_and_restore_globally_and_per_service() -> None:
    evac = Evacuations().evacuate("az2").evacuate("az3", "web")
    assert evac.for_service("web") == {"az2", "az3"}
    assert evac.for_service("db") == {"az2"}
    assert evac.restore("az3", "web").for_service("web") == {"az2"}
    with pytest.raises(RestoreConflict, match="without a service"):
        evac.restore("az2", "web")
    # a global restore clears the zone everywhere, per-service evacuations included
    both = evac.evacuate("az3")
    assert both.restore("az3") == Evacuations(frozenset({"az2"}))
    assert Evacuations().restore("az9") == Evacuations()  # restoring nothing is no error


def test_evacuations_are_values_that_round_trip_through_json() -> None:
    evac = Evacuations().evacuate("az2").evacuate("az3", "web").evacuate("az1", "db")
    data = evac.to_json()
    assert data == {"global": ["az2"], "services": {"db": ["az1"], "web": ["az3"]}}
    assert Evacuations.from_json(json.loads(json.dumps(data))) == evac
    assert evac.evacuate("az2") == evac  # evacuating twice changes nothing


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "expected an object"),
        ({"global": "az2"}, "global must be a list"),
        ({"global": ["az 2"]}, "not a zone name"),
        ({"services": {"web": ["x;y"]}}, "services.web"),
        ({"services": []}, "'services' must be an object"),
    ],
)
def test_bad_json_is_refused_with_the_place(data: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Evacuations.from_json(data)


def test_bad_zone_names_are_refused_by_the_methods() -> None:
    with pytest.raises(ValueError, match="not a zone name"):
        Evacuations().evacuate("../etc")


operations = st.lists(
    st.tuples(
        st.sampled_from(["evacuate", "restore"]),
        st.sampled_from(["az1", "az2", "az3"]),
        st.sampled_from([None, "web", "db"]),
    ),
    max_size=20,
)


@given(operations)
def test_any_sequence_round_trips_and_a_global_restore_clears_the_zone(ops) -> None:
    evac = Evacuations()
    for action, zone, service in ops:
        try:
            evac = getattr(evac, action)(zone, service)
        except RestoreConflict:
            assert action == "restore" and service is not None and zone in evac.everywhere
    assert Evacuations.from_json(json.loads(json.dumps(evac.to_json()))) == evac
    assert all(zones for _, zones in evac.per_service)  # no empty entries kept
    for zone in ("az1", "az2", "az3"):
        cleared = evac.restore(zone)
        assert all(zone not in cleared.for_service(s) for s in ("web", "db", "other"))
        evacuated = evac.evacuate(zone)
        assert all(zone in evacuated.for_service(s) for s in ("web", "db", "other"))


def test_state_file_keeps_evacuations_across_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    cache = StateCache(path, ttl=60)
    evac = Evacuations().evacuate("az2").evacuate("az3", "web")
    assert cache.save_evacuations(evac)
    doc = json.loads(path.read_text())
    assert doc["_synapse"]["zone_evacuations"]["global"] == ["az2"]
    assert isinstance(doc["_synapse"]["zone_evacuations"]["timestamp"], int)

    restarted = StateCache(path, ttl=60)
    restarted.load()
    assert restarted.evacuations == evac
    assert restarted.cached("_synapse") is None  # the reserved key is not a service
    # a later server update keeps them; restoring everything leaves the plain Airbnb form
    restarted.update({}, ["web"])
    assert "_synapse" in json.loads(path.read_text())
    restarted.save_evacuations(Evacuations())
    assert json.loads(path.read_text()) == {}


def test_old_state_file_without_evacuations_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    stamp = 1_700_000_000
    entry = {"timestamp": stamp, "host": "10.0.0.1", "port": 80, "name": "a"}
    path.write_text(json.dumps({"web": {"a_10.0.0.1:80": entry}}))
    cache = StateCache(path, ttl=60, clock=lambda: stamp)
    cache.load()
    assert cache.evacuations == Evacuations()
    cached = cache.cached("web")
    assert cached is not None and [f.registration.host for f in cached] == ["10.0.0.1"]


def test_broken_evacuations_in_the_state_file_are_dropped_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text(json.dumps({"_synapse": {"zone_evacuations": {"global": "az2"}}}))
    cache = StateCache(path, ttl=60)
    cache.load()
    assert cache.evacuations == Evacuations()
    assert cache.last_error is None  # the servers part of the file was fine
