"""Errors a newcomer meets on a first config say where the file was looked for and what was
probably meant (review s44 newuser)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nerve.config import load_nerve_config
from smartstack.configfile import ConfigError

SERVICE = {"host": "10.0.0.1", "port": 80, "zk_hosts": ["h:2181"], "zk_path": "/s"}


def _error(path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load_nerve_config(path)
    return str(caught.value)


def test_relative_service_conf_dir_says_it_is_read_from_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # /etc/nerve/nerve.json with `service_conf_dir: services`, nerve run from /: before, the
    # error said "/services is not a directory" and nothing of why not /etc/nerve/services.
    etc = tmp_path / "etc"
    (etc / "services").mkdir(parents=True)
    config = etc / "nerve.json"
    config.write_text(json.dumps({"instance_id": "a", "service_conf_dir": "services"}))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    text = _error(config)
    assert f"{elsewhere / 'services'} is not a directory" in text
    assert f"read from the current directory, {elsewhere}," in text
    assert f"beside the config file, {etc / 'services'} is one" in text


def test_absolute_service_conf_dir_gets_no_relative_hint(tmp_path: Path) -> None:
    config = tmp_path / "nerve.json"
    missing = tmp_path / "nowhere"
    config.write_text(json.dumps({"instance_id": "a", "service_conf_dir": str(missing)}))
    text = _error(config)
    assert f"{missing} is not a directory" in text
    assert "current directory" not in text


NO_PORT = {k: v for k, v in SERVICE.items() if k != "port"}


@pytest.mark.parametrize(
    ("service", "said"),
    [
        # Before: only "needs 'zk_hosts'" / "required key is missing", the typo unnamed.
        ({**SERVICE, "zk_hosts": None, "zk_host": ["h:2181"]},
         "'zk_host' given: did you mean 'zk_hosts'?"),
        ({**SERVICE, "checks": [{"type": "http", "url": "/health"}]},
         "'url' given: did you mean 'uri'?"),
        ({**NO_PORT, "prot": 80}, "'prot' given: did you mean 'port'?"),
    ],
)  # fmt: skip
def test_a_missing_key_names_its_near_miss(tmp_path: Path, service: dict, said: str) -> None:
    config = tmp_path / "nerve.json"
    service = {k: v for k, v in service.items() if v is not None}
    config.write_text(json.dumps({"instance_id": "a", "services": {"web": service}}))
    assert said in _error(config)


def test_a_known_key_near_the_missing_one_is_no_hint(tmp_path: Path) -> None:
    # etcd_port is a real key, two edits from etcd_host: naming it would mislead.
    service = {"host": "10.0.0.1", "port": 80, "reporter_type": "etcd", "etcd_port": 2379}
    config = tmp_path / "nerve.json"
    config.write_text(json.dumps({"instance_id": "a", "services": {"web": service}}))
    text = _error(config)
    assert "needs 'etcd_host' or 'etcd_endpoints'" in text
    assert "given" not in text


@pytest.mark.parametrize(
    ("text", "said"),
    [
        # Before: "Input should be a valid list" / "... dictionary", the shape unexplained.
        ("instance_id: a\nservices:\n  web:\n    host: 10.0.0.1\n    port: 80\n"
         "    zk_hosts: [h:2181]\n    zk_path: /x\n    checks:\n      type: http\n"
         "      uri: /health\n",
         "services.web.checks: Input should be a valid list (got a mapping: a list is `- item`"),
        ("instance_id: a\nservices:\n  - web:\n      host: 10.0.0.1\n",
         "services: Input should be a valid dictionary (got a list: a mapping is `key: value`"),
    ],
)  # fmt: skip
def test_a_block_in_the_other_shape_says_how_to_write_it(
    tmp_path: Path, text: str, said: str
) -> None:
    config = tmp_path / "nerve.yaml"
    config.write_text(text)
    assert said in _error(config)


def test_a_service_file_given_as_the_main_config_says_so(tmp_path: Path) -> None:
    # `nerve -k -c nerve_services/api.yaml`: before, only "instance_id: required key is missing"
    path = tmp_path / "api.json"
    path.write_text(json.dumps({**SERVICE, "checks": [{"type": "tcp"}]}))
    text = _error(path)
    assert "instance_id: required key is missing" in text
    assert f"{path}: this looks like one service's block (its keys host, port, zk_hosts" in text
    assert "under 'services:', or reads files like this one from 'service_conf_dir'" in text


def test_a_main_config_with_an_error_is_not_called_a_service_file(tmp_path: Path) -> None:
    path = tmp_path / "nerve.json"
    path.write_text(json.dumps({"services": {"web": {**SERVICE, "port": "x"}}}))
    text = _error(path)
    assert "instance_id: required key is missing" in text and "looks like" not in text
