"""HAProxy times without a unit that are surely not milliseconds: a warning, never a refusal."""

from __future__ import annotations

from pathlib import Path

import yaml

from synapse.config import load_synapse_config


def _warnings(tmp_path: Path, defaults: list[str], service: dict) -> list[str]:
    doc = {
        "haproxy": {"config_file_path": str(tmp_path / "h.cfg"), "managed": {},
                    "defaults": defaults},
        "services": {"web": {"discovery": {"method": "base", "servers": ["127.0.0.1:80"]},
                             "haproxy": {"port": 3000, **service}}},
    }  # fmt: skip
    path = tmp_path / "synapse.yaml"
    path.write_text(yaml.safe_dump(doc))
    return [w.removeprefix(f"{path}: ") for w in load_synapse_config(path)[1]]


def test_seconds_written_without_a_unit_are_said_with_the_key(tmp_path: Path) -> None:
    warnings = _warnings(
        tmp_path,
        ["timeout connect 5", "timeout client 30s", "timeout server 5000"],
        {"server_options": "check inter 2 rise 2", "backend": ["timeout queue 10"]},
    )
    assert warnings == [
        "haproxy.defaults[0]: `timeout connect 5`: timeout connect 5 is 5 milliseconds "
        "(HAProxy's unit when none is written); perhaps `timeout connect 5s` was meant "
        "(or `5ms` to keep it)",
        "services.web.haproxy.backend[0]: `timeout queue 10`: timeout queue 10 is 10 "
        "milliseconds (HAProxy's unit when none is written); perhaps `timeout queue 10s` "
        "was meant (or `10ms` to keep it)",
        "services.web.haproxy.server_options: `check inter 2 rise 2`: inter 2 is 2 "
        "milliseconds (HAProxy's unit when none is written); perhaps `inter 2s` was meant "
        "(or `2ms` to keep it)",
    ]


def test_times_with_a_unit_or_plausible_milliseconds_say_nothing(tmp_path: Path) -> None:
    lines = ["timeout connect 50ms", "timeout server 3000", "timeout tunnel 1h", "timeout queue 0"]
    service = {"listen": ["default-server inter 2s fastinter 500 rise 2"],
               "server_options": "check inter 1000 slowstart 30s"}  # fmt: skip
    assert _warnings(tmp_path, lines, service) == []


def test_a_service_file_is_named_as_its_own(tmp_path: Path) -> None:
    """Review s32: a service_conf_dir service's warning named the main file."""
    conf = tmp_path / "services"
    conf.mkdir()
    block = {"discovery": {"method": "base", "servers": ["127.0.0.1:80"]},
             "haproxy": {"port": 3000, "backend": ["timeout server 30"]}}  # fmt: skip
    (conf / "api.yaml").write_text(yaml.safe_dump(block))
    doc = {"haproxy": {"config_file_path": str(tmp_path / "h.cfg"), "managed": {}},
           "service_conf_dir": str(conf)}  # fmt: skip
    path = tmp_path / "synapse.yaml"
    path.write_text(yaml.safe_dump(doc))
    (warning,) = load_synapse_config(path)[1]
    assert warning.startswith(f"{conf}/api.yaml: services.api.haproxy.backend[0]: ")
