"""A relative path that would reach a `stats socket` line (HAProxy reads it as host:port,
its ALERT names no key) is a load error naming the key; other relative paths stay."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from smartstack.configfile import ConfigError
from synapse.config import load_synapse_config

SERVICES = {"web": {"discovery": {"method": "base"}, "haproxy": {"port": 3210}}}


def load(tmp_path: Path, **haproxy: Any) -> str | None:
    block = {"config_file_path": str(tmp_path / "haproxy.cfg"), "managed": {}, **haproxy}
    path = tmp_path / "synapse.yaml"
    path.write_text(yaml.safe_dump({"services": SERVICES, "haproxy": block}))
    try:
        load_synapse_config(path)
    except ConfigError as exc:
        assert str(path) in str(exc)
        return str(exc)
    return None


@pytest.mark.parametrize(
    ("haproxy", "key"),
    [
        ({"config_file_path": "haproxy.cfg"}, "config_file_path: 'haproxy.cfg' is relative"),
        ({"managed": {"master_socket_path": "run/m.sock"}}, "managed.master_socket_path"),
        ({"socket_file_path": ["/run/a.sock", "b.sock"]}, "socket_file_path: 'b.sock'"),
        ({"global": ["stats socket admin.sock level admin"]}, "global (stats socket)"),
        ({"global": ['stats socket "admin.sock"']}, "global (stats socket): 'admin.sock'"),
        (
            {"managed": None, "reload_command": "true", "global": ["stats socket x.sock"]},
            "global (stats socket): 'x.sock'",
        ),
    ],
)
def test_a_relative_socket_path_is_refused_naming_its_key(
    tmp_path: Path, haproxy: dict[str, Any], key: str
) -> None:
    text = load(tmp_path, **haproxy)
    assert text is not None and key in text and "give an absolute path" in text


@pytest.mark.parametrize(
    "haproxy",
    [
        # Airbnb (not managed): a relative config file and socket mean the cwd, as in Ruby
        {"managed": None, "reload_command": "true", "config_file_path": "h.cfg"},
        {"managed": None, "reload_command": "true", "socket_file_path": "h.sock"},
        {"global": ["stats socket unix@h.sock level admin"]},  # (HAProxy takes it)
        # (review s31: quotes and $VAR are HAProxy's, it accepts all these)
        {"global": ["stats socket '/abs/q.sock' level admin"]},
        {"global": ['stats socket "/abs/d q.sock" level admin']},
        {"global": ['stats socket "${SOCKDIR}/admin.sock" level admin']},
        {"global": ["stats socket ${SOCKDIR}/admin.sock level admin"]},
        {"state_file_path": "state.json", "server_state_file": "hs.state"},
        {
            "config_file_path": "h.cfg",
            "managed": {"master_socket_path": "/run/m.sock"},
            "socket_file_path": "/run/a.sock",
        },
    ],
)
def test_relative_paths_no_socket_line_gets_stay_accepted(
    tmp_path: Path, haproxy: dict[str, Any]
) -> None:
    assert load(tmp_path, **haproxy) is None
