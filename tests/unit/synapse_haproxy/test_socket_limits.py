"""The managed HAProxy's unix socket paths against what it can bind: HAProxy 2.6 binds
'<path>.<pid>.tmp' first, so the limit is sun_path (108) less the NUL, '.tmp', the dot and
the pid's digits; `haproxy -c` binds nothing, so only synapse's own check catches it."""

from __future__ import annotations

from pathlib import Path

import pytest
from haproxy_helpers import haproxy_config

from synapse.haproxy.settings import settings_for
from synapse.haproxy.socket_limits import bind_limit, socket_path_problems


@pytest.mark.parametrize(
    ("pid_max", "limit"),
    [("32768\n", 97), ("4194304\n", 95), ("99999\n", 97), ("100000\n", 97), ("100001\n", 96)],
)
def test_the_limit_follows_the_digits_of_the_largest_pid(tmp_path: Path, pid_max, limit):
    (tmp_path / "pid_max").write_text(pid_max)
    assert bind_limit(tmp_path / "pid_max") == limit


def test_an_unreadable_pid_max_assumes_the_largest_pids(tmp_path: Path):
    assert bind_limit(tmp_path / "missing") == 95


def _problems(tmp_path: Path, directory: str, **haproxy) -> list[str]:
    config = haproxy_config(
        config_file_path=f"{directory}/haproxy.cfg",
        reload_command=None,
        managed={"stop_on_exit": True, **haproxy.pop("managed", {})},
        **haproxy,
    )
    return socket_path_problems(tmp_path / "s.yaml", config, settings_for(config))


def _dir(size: int) -> str:
    """A directory path of ``size`` bytes."""
    return "/" + "d" * (size - 1)


def test_the_default_sockets_beside_the_config_file(tmp_path: Path):
    limit = bind_limit()
    own = len("/haproxy-synapse.sock")  # (the longest default name: synapse's own socket)
    assert _problems(tmp_path, _dir(limit - own)) == []
    [line] = _problems(tmp_path, _dir(limit - own + 1))
    assert line.startswith(f"{tmp_path / 's.yaml'}: haproxy.config_file_path: ")
    assert f"is {limit + 1} bytes; HAProxy binds at most {limit} on this host" in line
    assert line.endswith("move the config file (synapse's own admin socket is beside it)")
    master = len("/haproxy-master.sock")
    [line, _] = _problems(tmp_path, _dir(limit - master + 1))
    assert line.startswith(f"{tmp_path / 's.yaml'}: haproxy.managed.master_socket_path: ")
    assert "set haproxy.managed.master_socket_path (beside haproxy.config_file_path" in line
    admin = len("/haproxy.sock")
    lines = _problems(tmp_path, _dir(limit - admin + 1))
    assert [line.split(": ")[1] for line in lines] == [
        "haproxy.managed.master_socket_path",
        "haproxy.config_file_path",
        "haproxy.socket_file_path",
    ]


def test_sockets_set_in_the_config_are_named_by_their_key(tmp_path: Path):
    long = _dir(bind_limit()) + "/x.sock"
    short = "/run/m.sock"
    [master, own] = _problems(tmp_path, "/etc/h", managed={"master_socket_path": long})
    assert ": haproxy.managed.master_socket_path: " in master and master.endswith(
        "set haproxy.managed.master_socket_path shorter"
    )
    assert ": haproxy.managed.master_socket_path: " in own and own.endswith(
        "shorter (synapse's own admin socket is beside it)"
    )
    managed = {"master_socket_path": short}
    [admin] = _problems(tmp_path, "/etc/h", managed=managed, socket_file_path=[long])
    assert ": haproxy.socket_file_path[0]: " in admin
    stats = [f"stats socket {long} mode 600 level admin"]
    [line] = _problems(tmp_path, "/etc/h", managed=managed, **{"global": stats})
    assert ": haproxy.global: " in line and line.endswith("shorten its `stats socket` path")


def test_a_long_config_dir_with_short_sockets_set_starts(tmp_path: Path):
    """The docs' advice for a long config directory (84 bytes): the master socket and
    socket_file_path in a short one. synapse's own admin socket goes beside them, so the
    install that started before it came still starts (before: refused, 105 bytes)."""
    long = _dir(84)
    managed = {"master_socket_path": "/run/s/m.sock"}
    assert _problems(tmp_path, long, managed=managed, socket_file_path=["/run/s/h.sock"]) == []
    config = haproxy_config(config_file_path=f"{long}/haproxy.cfg", reload_command=None,
                            managed=managed, socket_file_path=["/run/s/h.sock"])  # fmt: skip
    assert settings_for(config).runtime_sockets == ("/run/s/m-synapse.sock",)
    assert _problems(tmp_path, long, socket_file_path=["/run/s/h.sock"]) == [
        line
        for line in _problems(tmp_path, long, socket_file_path=["/run/s/h.sock"])
        if "master_socket_path" in line
    ]  # (beside socket_file_path when no master socket is set: only the master's is long)


def test_airbnb_mode_binds_nothing(tmp_path: Path):
    config = haproxy_config(config_file_path=_dir(200) + "/haproxy.cfg")
    assert socket_path_problems(tmp_path / "s.yaml", config, settings_for(config)) == []
