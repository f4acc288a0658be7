"""A key given twice in one mapping is said (review s31: a repeated service name lost its
first block without a word, even under --strict)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nerve.config import load_nerve_config
from smartstack.config_duplicates import yaml_load
from smartstack.configfile import ConfigError, load_document
from synapse.config import load_synapse_config, service_cache

SYNAPSE = """\
services:
  web:
    discovery: {method: base}
    default_servers: [{name: a, host: 127.0.0.1, port: 8080}]
    haproxy: {port: 3213}
  api:
    discovery: {method: base}
    default_servers: [{name: a, host: 127.0.0.1, port: 8081}]
    haproxy: {port: 3214, port: 3216}
  web:
    discovery: {method: base}
    default_servers: [{name: a, host: 127.0.0.1, port: 8082}]
    haproxy: {port: 3215}
"""


def test_a_repeated_service_warns_with_both_lines_and_strict_refuses(tmp_path: Path) -> None:
    path = tmp_path / "synapse.yaml"
    path.write_text(SYNAPSE)
    config, warnings = load_synapse_config(path)
    assert config.services["web"].haproxy.port == 3215  # the last wins, as in Ruby
    assert warnings == [
        f"{path}: services.api.haproxy.port is given twice on line 9: the second wins",
        f"{path}: services.web is given twice (lines 2 and 10): the second wins",
    ]
    with pytest.raises(ConfigError) as refused:
        load_synapse_config(path, strict=True)
    assert refused.value.lines[1] == (
        f"{path}: services.web is given twice (lines 2 and 10): the second wins "
        "(refused by --strict)"
    )


def test_a_service_file_names_its_own_lines_and_the_cache_keeps_saying_it(
    tmp_path: Path,
) -> None:
    (tmp_path / "services").mkdir()
    main = tmp_path / "synapse.yaml"
    main.write_text(f"service_conf_dir: {tmp_path / 'services'}\n")
    api = tmp_path / "services" / "api.yaml"
    api.write_text(
        "discovery: {method: base}\n"
        "default_servers: [{name: a, host: 127.0.0.1, port: 8081}]\n"
        "haproxy:\n  port: 3214\n  listen: [mode http]\n  port: 3215\n"
    )
    said = f"{api}: services.api.haproxy.port is given twice (lines 4 and 6): the second wins"
    cache = service_cache()
    for _ in range(2):  # a SIGHUP with the file unchanged: taken from the cache, said again
        _, warnings = load_synapse_config(main, cache=cache)
        assert warnings == [said]
    assert cache.parsed == 1


def test_nerve_and_json_files_too(tmp_path: Path) -> None:
    path = tmp_path / "nerve.json"
    service = {"host": "10.0.0.1", "port": 80, "zk_hosts": ["h:2181"], "zk_path": "/s"}
    text = json.dumps({"instance_id": "a", "services": {"w": service}}, indent=2)
    path.write_text(text.replace('"port": 80,', '"port": 80,\n      "port": 81,'))
    config, warnings = load_nerve_config(path)
    assert config.services["w"].port == 81
    assert warnings == [f"{path}: services.w.port is given twice (lines 6 and 7): the second wins"]


def test_no_repeat_no_word_and_plain_callers_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("a: &x {b: 1}\nc:\n  <<: *x\n  b: 2\nd: [*x, *x]\n")
    repeated: list[str] = []
    assert load_document(path, repeated=repeated) == {
        "a": {"b": 1}, "c": {"b": 2}, "d": [{"b": 1}, {"b": 1}]
    }  # fmt: skip
    assert repeated == []  # a merge key and its override are not a repeat


@pytest.mark.parametrize(
    ("text", "twice"),
    [
        ('a:\n  "80": x\n  80: y\n', []),  # a string and a number: two keys, both kept
        ("a:\n  yes: 1\n  true: 2\n", [(("a", "true"), 2, 3)]),  # YAML 1.1: one key, True
    ],
)
def test_keys_are_compared_as_the_parser_keeps_them(text: str, twice: list) -> None:
    """(code review s31: the key's text was compared: "80" and 80 said twice, yes and true
    not)"""
    found: list = []
    yaml_load(text, found)
    assert found == twice
