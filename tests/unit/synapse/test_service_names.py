"""A service name HAProxy cannot take as a proxy name is refused at load, naming the file
and the key (before: it loaded, and `haproxy -c` failed with an alert naming neither:
"web frontend" gave "please use the 'bind' keyword for listening addresses")."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from smartstack.configfile import ConfigError
from synapse.config import load_synapse_config

SERVICE = {"discovery": {"method": "base"}, "haproxy": {"port": 3213},
           "default_servers": [{"name": "a", "host": "127.0.0.1", "port": 8080}]}  # fmt: skip


def write(tmp_path: Path, services: object, **top: object) -> Path:
    path = tmp_path / "synapse.yaml"
    path.write_text(yaml.safe_dump({"services": services, **top}))
    return path


@pytest.mark.parametrize(
    ("name", "found", "meant"),
    [
        ("web frontend", "' '", "web_frontend"),
        ("a/b", "'/'", "a_b"),
        ("ünïcode", "'ï' 'ü'", "unicode"),
        ("api v2 (beta)", "' ' '(' ')'", "api_v2_beta"),
    ],
)
def test_a_name_haproxy_refuses_is_an_error_naming_file_key_and_a_fix(
    tmp_path: Path, name: str, found: str, meant: str
) -> None:
    path = write(tmp_path, {name: SERVICE, "ok": SERVICE})
    with pytest.raises(ConfigError) as caught:
        load_synapse_config(path)
    [line] = caught.value.lines
    assert line.startswith(f"{path}: services: {name!r} cannot name an HAProxy"), line
    assert f"(found {found})" in line and line.endswith(f"perhaps {meant!r}"), line


def test_names_haproxy_takes_load(tmp_path: Path) -> None:
    names = ["web", "my.service-v2", "a:b_c", "9lives", "x" * 200]
    config, _ = load_synapse_config(write(tmp_path, {n: SERVICE for n in names}))
    assert sorted(config.services) == sorted(names)


def test_a_service_conf_dir_file_is_named_as_the_source(tmp_path: Path) -> None:
    conf = tmp_path / "conf.d"
    conf.mkdir()
    (conf / "web front.json").write_text(json.dumps(SERVICE))
    with pytest.raises(ConfigError) as caught:
        load_synapse_config(write(tmp_path, {"ok": SERVICE}, service_conf_dir=str(conf)))
    [line] = caught.value.lines
    assert line.startswith(f"{conf / 'web front.json'}: services: 'web front' "), line


def test_backend_name_and_the_list_format_are_checked_too(tmp_path: Path) -> None:
    named = {**SERVICE, "haproxy": {"port": 3213, "backend_name": "be one"}}
    with pytest.raises(ConfigError, match=r"services\.web\.haproxy\.backend_name: 'be one' "):
        load_synapse_config(write(tmp_path, {"web": named}))
    listed = [{"name": "web 1", "local_port": 3213, **SERVICE}]
    with pytest.raises(ConfigError, match=r"'web 1' cannot name an HAProxy .* perhaps 'web_1'"):
        load_synapse_config(write(tmp_path, listed))


def test_an_empty_name_says_so(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="an empty name cannot name an HAProxy frontend"):
        load_synapse_config(write(tmp_path, {"": SERVICE}))


BACKEND_ONLY = {"discovery": {"method": "base"}, "haproxy": {"backend_name": "web_api"},
                "default_servers": [{"name": "a", "host": "127.0.0.1", "port": 8080}]}  # fmt: skip
FILE_ONLY = {"discovery": {"method": "base"}, "haproxy": {"disabled": True}}


@pytest.mark.parametrize("service", [BACKEND_ONLY, FILE_ONLY])
def test_a_name_haproxy_never_sees_loads(tmp_path: Path, service: dict) -> None:
    """Review s31: a backend-only service with its own backend_name (no frontend without
    `port`) and a disabled (file_output-only) one never name an HAProxy proxy."""
    config, _ = load_synapse_config(write(tmp_path, {"web api": service}))
    assert list(config.services) == ["web api"]


def test_with_a_port_the_name_is_the_frontend_s_and_refused(tmp_path: Path) -> None:
    with_port = {**BACKEND_ONLY, "haproxy": {"backend_name": "web_api", "port": 3213}}
    with pytest.raises(ConfigError) as caught:
        load_synapse_config(write(tmp_path, {"web api": with_port}))
    assert "'web api' cannot name an HAProxy" in caught.value.lines[0]


def test_the_list_format_checks_the_same(tmp_path: Path) -> None:
    listed = [{"name": "web api", **BACKEND_ONLY}]
    config, _ = load_synapse_config(write(tmp_path, listed))
    assert list(config.services) == ["web api"]
    with pytest.raises((ConfigError, ValueError)):
        load_synapse_config(write(tmp_path, [{"name": "web api", "local_port": 3213,
                                              **BACKEND_ONLY}]))  # fmt: skip
