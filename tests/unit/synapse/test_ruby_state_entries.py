"""A state file Ruby synapse wrote (HaproxyState#update_state_file): its entries of
nameless records (``"name": null``, keyed ``host:port``) and Ruby-valid records with a
weight above 256 or a null label are served at a start while the registry is down."""

from __future__ import annotations

import json
from pathlib import Path

from synapse.state_cache import StateCache

NOW = 1_700_000_000


def entry(**fields: object) -> dict[str, object]:
    ruby = {"timestamp": NOW - 60, "haproxy_server_id": 1, "id": 12, "weight": None,
            "haproxy_server_options": None, "labels": None}  # fmt: skip
    return {**ruby, **fields}


def test_ruby_state_file_entries_are_all_served(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    web = {
        "web01_10.0.0.5:8080": entry(name="web01", host="10.0.0.5", port=8080),
        "10.0.0.6:8080": entry(name=None, host="10.0.0.6", port=8080),
        "web03_10.0.0.7:8080": entry(
            name="web03", host="10.0.0.7", port=8080, weight=1000, labels={"canary": None}
        ),
        "::1:8080": entry(name=None, host="::1", port=8080),
    }
    path.write_text(json.dumps({"web": web}, indent=2))
    cache = StateCache(path, 86400, clock=lambda: NOW)
    cache.load()
    found = {f.origin: f.registration for f in cache.cached("web") or []}
    assert {origin: (r.name, r.address) for origin, r in found.items()} == {
        "state_file:web01_10.0.0.5:8080": ("web01", "10.0.0.5:8080"),
        # named after its key, as a nameless ZooKeeper record is after its node
        "state_file:10.0.0.6:8080": ("10.0.0.6:8080", "10.0.0.6:8080"),
        "state_file:web03_10.0.0.7:8080": ("web03", "10.0.0.7:8080"),
        "state_file:::1:8080": ("1:8080", "::1:8080"),
    }
    assert found["state_file:web03_10.0.0.7:8080"].weight == 256
    assert found["state_file:web03_10.0.0.7:8080"].labels == {}
