"""issue 11 (pure): generator settings from the discovery znode's data, merged under the
file's block, and kept by the state file (Ruby's ``watcher_config_for_generator``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError
from synapse_testlib import service_config

from synapse.generator_config import parse_generator_config, with_generator_config
from synapse.state_cache import GENERATOR_KEY, StateCache

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


def test_state_file_keeps_and_drops_the_generator_settings(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    cache = StateCache(path, ttl=100)
    settings = {"haproxy": {"server_options": "check"}}
    assert cache.update({}, ["web"], {"web": settings})
    assert json.loads(path.read_text()) == {"web": {GENERATOR_KEY: settings}}
    restarted = StateCache(path, ttl=100)
    restarted.load()
    assert restarted.generator("web") == settings
    assert restarted.cached("web") is None  # the settings are not a server
    assert cache.update({}, ["web"], {})
    assert json.loads(path.read_text()) == {"web": {}}


def test_a_daemon_on_plain_models_asks_one_child_for_all_and_revisits(monkeypatch) -> None:
    """Plain models: the merges wait in a queue, one child validates them all (faked here:
    a unit test starts no process), the loop runs on, and each service is revisited."""
    import asyncio

    from smartstack import model_plain, modelbase
    from synapse import config_child, generator_config

    batches: list[int] = []

    def child(docs: list[dict]) -> list[object]:
        batches.append(len(docs))
        return [("bad" if d["haproxy"].get("backend_order") else d) for d in docs]

    monkeypatch.setattr(modelbase, "is_plain", lambda: True)
    monkeypatch.setattr(modelbase, "ValidationError", model_plain.ValidationError)
    monkeypatch.setattr(config_child, "services_from_child", child)
    monkeypatch.setattr(generator_config, "_ANSWERS", {})
    file_cfg = service_config(ZK, haproxy={"port": 3000})
    found = [{"haproxy": {"server_options": f"maxconn {n}"}} for n in (1, 2)]
    found.append({"haproxy": {"backend_order": "sideways"}})
    revisited: list[int] = []

    async def scenario() -> None:
        for index, settings in enumerate(found):
            revisit = lambda i=index: revisited.append(i)  # noqa: E731
            assert with_generator_config(file_cfg, settings, revisit) is file_cfg  # not yet
        await generator_config.settled(5.0)
        await asyncio.sleep(0)  # the revisits are called on the loop

    asyncio.run(scenario())
    assert batches == [3] and sorted(revisited) == [0, 1, 2]
    answer = with_generator_config(file_cfg, found[0])
    assert answer["haproxy"]["server_options"] == "maxconn 1"  # the child's answer, kept
    with pytest.raises(modelbase.ValidationError, match="bad"):
        with_generator_config(file_cfg, found[2])
