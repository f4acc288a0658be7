"""issue 11 (pure, injected clock): the state file keeps servers that left for
``state_file_ttl`` (marked ``left``, never served), as Ruby's state file does."""

from __future__ import annotations

import json
from pathlib import Path

from synapse_testlib import service_config

from smartstack.record import Registration
from synapse.model import Found
from synapse.selection import select_servers
from synapse.state_cache import StateCache

ZK = {"method": "zookeeper", "hosts": ["127.0.0.1:2181"], "path": "/nerve/web"}
CFG = service_config(ZK)


def selection(*ports: int):
    found = [Found(Registration(host="10.0.0.1", port=p, name=f"s{p}"), f"zk:{p}") for p in ports]
    return select_servers(CFG, found, None)


class Clock:
    """The injected clock: ``now`` is moved by the test."""

    now = 1_700_000_000.0

    def time(self) -> float:
        return self.now


def test_left_servers_are_kept_for_the_ttl_then_dropped(tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / "state.json"
    cache = StateCache(path, ttl=100, clock=clock.time)
    assert cache.update({"web": selection(1, 2)}, ["web"])
    clock.now += 10
    assert cache.update({"web": selection(1)}, ["web"])  # s2 left
    doc = json.loads(path.read_text())["web"]
    assert doc["s2_10.0.0.1:2"]["left"] is True
    assert doc["s2_10.0.0.1:2"]["timestamp"] == 1_700_000_000  # last seen, not rewritten
    assert "left" not in doc["s1_10.0.0.1:1"]

    # a restart reads the file: only the servers present at the last write are served
    restarted = StateCache(path, ttl=100, clock=clock.time)
    restarted.load()
    assert [f.registration.port for f in restarted.cached("web") or []] == [1]

    clock.now += 95  # s2 last seen 105 s ago: past the TTL, gone from the file
    assert cache.update({"web": selection(1)}, ["web"])
    assert list(json.loads(path.read_text())["web"]) == ["s1_10.0.0.1:1"]


def test_a_server_that_comes_back_is_current_again(tmp_path: Path) -> None:
    clock = Clock()
    cache = StateCache(tmp_path / "state.json", ttl=100, clock=clock.time)
    cache.update({"web": selection(1, 2)}, ["web"])
    clock.now += 1
    cache.update({"web": selection(1)}, ["web"])
    clock.now += 1
    cache.update({"web": selection(1, 2)}, ["web"])
    assert sorted(f.registration.port for f in cache.cached("web") or []) == [1, 2]


def test_leader_election_after_a_restart_from_the_state_file(tmp_path: Path) -> None:
    cfg = service_config(ZK, leader_election=True)
    found = [
        Found(Registration(host="10.0.0.1", port=p, name=f"s{p}"), f"zk:{p}", seq)
        for p, seq in ((1, 9), (2, 4))
    ]
    cache = StateCache(tmp_path / "state.json", ttl=100)
    cache.update({"web": select_servers(cfg, found, None)}, ["web"])
    restarted = StateCache(tmp_path / "state.json", ttl=100)
    restarted.load()
    chosen = select_servers(cfg, restarted.cached("web"), None)
    assert [(s.port, r["id"]) for s, r in zip(chosen.servers, chosen.records, strict=True)] == [
        (2, 4)
    ]
