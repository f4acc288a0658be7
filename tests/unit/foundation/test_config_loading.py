"""Config loading in process: Airbnb examples get Airbnb's defaults, unknown keys warn."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nerve.config import load_nerve_config
from smartstack.configfile import ConfigError
from synapse.config import load_synapse_config

ROOT = Path(__file__).resolve().parents[3]


EXAMPLES = ROOT / "examples" / "airbnb"


def test_nerve_example_applies_airbnb_defaults_and_service_conf_dir(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(ROOT)  # Airbnb's service_conf_dir is relative to the working directory
    config, warnings = load_nerve_config(EXAMPLES / "nerve.conf.json")
    assert warnings == []
    assert set(config.services) == {"web_http", "cache_tcp", "queue", "search", "api"}
    queue = config.services["queue"]
    assert queue.check_interval == 0.5
    assert queue.reporter_type == "zookeeper"
    assert queue.node_type == "ephemeral_sequential"
    check = queue.checks[0]
    assert (check.timeout, check.rise, check.fall) == (0.1, 1, 1)
    assert config.services["search"].etcd_endpoint_list() == ["etcd.example.internal:4001"]


def test_synapse_example_applies_airbnb_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    config, _ = load_synapse_config(EXAMPLES / "synapse.conf.json")
    assert set(config.services) == {"web", "search", "finagle", "billing"}
    assert config.haproxy is not None
    assert config.haproxy.restart_interval == 30
    search = config.services["search"]
    assert search.use_previous_backends is True
    assert search.haproxy.has_frontend is False  # no port: backend only
    assert search.discovery.servers[1].port == 8983
    assert config.services["web"].haproxy.has_frontend is True
    assert config.services["finagle"].discovery.hosts == ["zk1.example.internal:2181"]


def test_legacy_list_format_is_converted() -> None:
    config, warnings = load_synapse_config(EXAMPLES / "synapse.legacy.yaml")
    sherlock = config.services["sherlock"]
    assert sherlock.haproxy.port == 3212
    assert sherlock.haproxy.listen == ["mode http", "option httpchk /health"]
    assert any("synapse: unknown key" in w for w in warnings)


def write(tmp_path: Path, name: str, content: object) -> Path:
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


NERVE_SERVICE = {"host": "10.0.0.1", "port": 80, "zk_hosts": ["h:2181"], "zk_path": "/s"}


def test_unknown_keys_warn_but_load(tmp_path: Path) -> None:
    doc = {"instance_id": "a", "colour": "blue", "services": {"w": {**NERVE_SERVICE, "zone": 1}}}
    path = write(tmp_path, "nerve.json", doc)
    config, warnings = load_nerve_config(path)
    assert config.instance_id == "a"
    assert warnings == [
        f"{path}: colour: unknown key, ignored",
        f"{path}: services.w.zone: unknown key, ignored",
    ]


def test_instance_id_override_from_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, "nerve.json", {"services": {"w": NERVE_SERVICE}})
    with pytest.raises(ConfigError):
        load_nerve_config(path)
    monkeypatch.setenv("NERVE_INSTANCE_ID", "from-env")
    config, _ = load_nerve_config(path)
    assert config.instance_id == "from-env"
