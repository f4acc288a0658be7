"""Config hints name only keys of the block they are about, and never raise on the error
path (review s44 cr-small: a key-renaming fuzz of the examples)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from nerve.config import load_nerve_config
from smartstack.configfile import ConfigError


def _error(path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load_nerve_config(path)
    return str(caught.value)


def _docker(tmp_path: Path, docker: dict) -> Path:
    path = tmp_path / "nerve.yaml"
    path.write_text(yaml.safe_dump({"instance_id": "a", "services": {}, "docker": docker}))
    return path


def test_a_registry_key_one_level_above_service_defaults_is_not_its_own_near_miss(
    tmp_path: Path,
) -> None:
    # Before: "docker: reporter_type etcd needs 'etcd_host' or 'etcd_endpoints';
    # 'etcd_endpoints' given: did you mean 'etcd_endpoints'?" (the validator checks
    # service_defaults, the hint looked at docker's own keys).
    defaults = {"reporter_type": "etcd", "etcd_path": "/s/{service}"}
    path = _docker(tmp_path, {"etcd_endpoints": ["etcd:2379"], "service_defaults": defaults})
    text = _error(path)
    assert "needs 'etcd_host' or 'etcd_endpoints'" in text
    assert "did you mean" not in text


def test_a_near_miss_at_the_docker_level_is_not_offered_for_service_defaults(
    tmp_path: Path,
) -> None:
    # Before: "'zk_host' given: did you mean 'zk_hosts'?": renamed so, docker still lacks it.
    defaults = {"reporter_type": "zookeeper", "zk_path": "/s/{service}"}
    path = _docker(tmp_path, {"zk_host": ["zk:2181"], "service_defaults": defaults})
    assert "did you mean 'zk_hosts'" not in _error(path)


def test_a_relative_service_conf_dir_whose_path_is_too_long_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Beside the config (a deep folder) the path is past PATH_MAX: Path.is_dir raised
    # ENAMETOOLONG from the hint, a traceback in place of "is not a directory".
    deep = tmp_path.joinpath(*["c" * 250] * 8)
    deep.mkdir(parents=True)
    config = deep / "nerve.yaml"
    conf_dir = "/".join(["d" * 200] * 12)
    config.write_text(yaml.safe_dump({"instance_id": "a", "service_conf_dir": conf_dir}))
    monkeypatch.chdir(tmp_path)
    assert len(os.fsencode(deep / conf_dir)) > 4096
    assert "is not a directory" in _error(config)


def test_a_service_conf_dir_with_a_too_long_name_is_a_config_error(tmp_path: Path) -> None:
    config = tmp_path / "nerve.yaml"
    config.write_text(yaml.safe_dump({"instance_id": "a", "service_conf_dir": "x" * 300}))
    assert "is not a directory" in _error(config)
