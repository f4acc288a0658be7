"""The state file keeps a bounded number of servers that left (the larger of MIN_LEFT and
the service's servers, the most recently seen), not a day of departures; the servers
present at the last write are never dropped, and Airbnb's format is kept."""

from __future__ import annotations

import json
from pathlib import Path

from synapse_testlib import service_config

from smartstack.record import Registration
from synapse.model import Found
from synapse.selection import Selection, select_servers
from synapse.state_cache import StateCache
from synapse.state_entries import MIN_LEFT
from synapse.zone_state import Evacuations

CFG = service_config({"method": "zookeeper", "hosts": ["127.0.0.1:2181"], "path": "/nerve/web"})
NOW = 1_700_000_000


def selection(*ids: int) -> Selection:
    found = [
        Found(Registration(host="10.0.0.1", port=10000 + i, name=f"i{i}"), f"zk:{i}") for i in ids
    ]
    return select_servers(CFG, found, None)


def key(i: int) -> str:
    return f"i{i}_10.0.0.1:{10000 + i}"


class Clock:
    now = float(NOW)

    def time(self) -> float:
        return self.now


def on_disk(path: Path) -> dict[str, dict[str, dict]]:
    return json.loads(path.read_text())


def left_and_current(entries: dict[str, dict]) -> tuple[set[str], set[str]]:
    left = {k for k, v in entries.items() if v.get("left")}
    return left, set(entries) - left


def test_a_server_replaced_again_and_again_leaves_only_the_newest_departures(
    tmp_path: Path,
) -> None:
    clock, path = Clock(), tmp_path / "state.json"
    cache = StateCache(path, ttl=86400, clock=clock.time)
    for step in range(200):  # i<step> replaced by i<step+1> each second; i1000 stays
        clock.now += 1
        cache.update({"web": selection(1000, step + 1)}, ["web"])
    left, current = left_and_current(on_disk(path)["web"])
    assert current == {key(1000), key(200)}
    assert left == {key(i) for i in range(200 - MIN_LEFT, 200)}, "the most recently seen"
    assert cache.entries("web").keys() == left | current
    # what a restart with the registry down serves: the servers of the last write
    restarted = StateCache(path, ttl=86400, clock=clock.time)
    restarted.load()
    assert sorted(f.registration.port for f in restarted.cached("web") or []) == [10200, 11000]


def test_a_redeploy_keeps_every_replaced_server_the_next_one_drops_them(tmp_path: Path) -> None:
    clock, path = Clock(), tmp_path / "state.json"
    cache = StateCache(path, ttl=86400, clock=clock.time)
    generations = [range(g * 100, g * 100 + 30) for g in range(3)]  # 30 servers, > MIN_LEFT
    for ids in generations:
        clock.now += 10
        cache.update({"web": selection(*ids)}, ["web"])
    left, current = left_and_current(on_disk(path)["web"])
    assert current == {key(i) for i in generations[2]}
    assert left == {key(i) for i in generations[1]}


def ruby_entry(i: int, stamp: int) -> dict[str, object]:
    """An entry as Ruby synapse writes it (HaproxyState#update_state_file)."""
    return {"timestamp": stamp, "host": "10.0.0.1", "port": 10000 + i, "name": f"i{i}",
            "haproxy_server_id": i + 1, "id": i, "weight": None, "labels": None,
            "haproxy_server_options": None}  # fmt: skip


def test_an_airbnb_file_is_written_back_as_it_was_and_then_bounded(tmp_path: Path) -> None:
    """All 40 entries of a Ruby file (no ``left`` marks: each present at its last write)
    round-trip whatever the cap; once discovery reports 2 of them, 38 have left and
    MIN_LEFT of them stay, the most recently seen."""
    path, clock = tmp_path / "state.json", Clock()
    ruby = {"web": {key(i): ruby_entry(i, NOW - 100 + i) for i in range(40)}}
    path.write_text(json.dumps(ruby, indent=2))
    cache = StateCache(path, ttl=86400, clock=clock.time)
    cache.load()
    assert cache.save_evacuations(Evacuations())  # (writes the file: nothing else changed)
    written = on_disk(path)
    assert written.pop("_synapse").keys() == {"clock"}  # (when it was written: state_clock)
    assert written == ruby
    assert len(cache.cached("web") or []) == 40

    clock.now += 5
    cache.update({"web": selection(0, 1)}, ["web"])
    web = on_disk(path)["web"]
    left, current = left_and_current(web)
    assert current == {key(0), key(1)}
    assert left == {key(i) for i in range(40 - MIN_LEFT, 40)}
    assert all(web[k] == {**ruby["web"][k], "left": True} for k in left), "kept as they were"


def test_a_file_holding_a_day_of_departures_is_bounded_at_the_next_write(tmp_path: Path) -> None:
    """A file an older synapse wrote: 20 servers and 500 that left. Its 20 servers all
    stay (never dropped by the cap); of the departures the 20 most recently seen."""
    path = tmp_path / "state.json"
    servers = {key(i): ruby_entry(i, NOW) for i in range(20)}
    gone = {key(i): {**ruby_entry(i, NOW - 1000 + i), "left": True} for i in range(100, 600)}
    path.write_text(json.dumps({"web": {**servers, **gone}, "api": servers}))
    cache = StateCache(path, ttl=86400, clock=lambda: NOW + 1.0)
    cache.load()
    assert cache.save_evacuations(Evacuations())
    web = on_disk(path)["web"]
    left, current = left_and_current(web)
    assert current == set(servers)
    assert left == {key(i) for i in range(580, 600)}
    assert on_disk(path)["api"] == servers
