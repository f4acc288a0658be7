"""issue 11 (pure): generator settings from the discovery znode's data, merged under the
file's block, and kept by the state file (Ruby's ``watcher_config_for_generator``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError
from synapse_testlib import service_config

from synapse.generator_config import parse_generator_config, with_generator_config
from synapse.state_cache import StateCache
from synapse.state_entries import GENERATOR_KEY

ZK = {"method": "zookeeper", "hosts": ["127.0.0.1:2181"], "path": "/nerve/web"}


def test_parse_keeps_generator_blocks_and_notes_the_rest() -> None:
    data = json.dumps(
        {"haproxy": {"server_options": "check"}, "file_output": "x", "statsd": {"a": 1}}
    ).encode()
    found, notes = parse_generator_config(data)
    assert found == {"haproxy": {"server_options": "check"}, "file_output": {}}
    assert notes == ["file_output: not an object, ignored", "statsd: not a generator, ignored"]
    assert parse_generator_config(b"") == ({}, [])
    with pytest.raises(ValueError):
        parse_generator_config(b"[1, 2]")


def test_the_file_wins_and_the_znode_fills_in() -> None:
    file_cfg = service_config(ZK, haproxy={"port": 3000, "listen": ["mode http"]})
    merged = with_generator_config(
        file_cfg, {"haproxy": {"port": 4000, "server_options": "check inter 2s"}}
    )
    assert merged.haproxy.port == 3000 and merged.haproxy.listen == ["mode http"]
    assert merged.haproxy.server_options == "check inter 2s"
    assert merged.discovery == file_cfg.discovery
    assert with_generator_config(file_cfg, {}) is file_cfg
    with pytest.raises(ValidationError):
        with_generator_config(file_cfg, {"haproxy": {"backend_order": "sideways"}})


def services_in(path: Path) -> dict:
    """The state file's services (the reserved key, synapse's own: left out)."""
    return {k: v for k, v in json.loads(path.read_text()).items() if k != "_synapse"}


def test_state_file_keeps_and_drops_the_generator_settings(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    cache = StateCache(path, ttl=100)
    settings = {"haproxy": {"server_options": "check"}}
    assert cache.update({}, ["web"], {"web": settings})
    assert services_in(path) == {"web": {GENERATOR_KEY: settings}}
    restarted = StateCache(path, ttl=100)
    restarted.load()
    assert restarted.generator("web") == settings
    assert restarted.cached("web") is None  # the settings are not a server
    assert cache.update({}, ["web"], {})
    assert services_in(path) == {"web": {}}


def test_a_tool_on_plain_models_waits_for_the_child(monkeypatch) -> None:
    """Plain models, no loop: one child validates the merge, waited for (faked here: a unit
    test starts no process); its answer, or its message raised. The daemon's way, which
    does not wait: tests/unit/synapse/test_generator_checks.py."""
    from smartstack import model_plain, modelbase
    from synapse import config_child

    def child(docs: list[dict]) -> list[object]:
        return [("bad" if d["haproxy"].get("backend_order") else d) for d in docs]

    monkeypatch.setattr(modelbase, "is_plain", lambda: True)
    monkeypatch.setattr(modelbase, "ValidationError", model_plain.ValidationError)
    monkeypatch.setattr(config_child, "services_from_child", child)
    file_cfg = service_config(ZK, haproxy={"port": 3000})
    answer = with_generator_config(file_cfg, {"haproxy": {"server_options": "maxconn 1"}})
    assert answer["haproxy"] == {"port": 3000, "server_options": "maxconn 1"}
    with pytest.raises(modelbase.ValidationError, match="bad"):
        with_generator_config(file_cfg, {"haproxy": {"backend_order": "sideways"}})
