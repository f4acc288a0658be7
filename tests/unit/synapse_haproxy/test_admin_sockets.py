"""Managed mode's admin sockets (synapse.haproxy.settings): synapse's own never shares a
path with a socket the operator configured."""

from __future__ import annotations

from pathlib import Path

from haproxy_helpers import haproxy_config

from synapse.haproxy.settings import settings_for


def managed(tmp_path: Path, **overrides) -> tuple[str, tuple[str, ...]]:
    """(synapse's own admin socket, the others) of a managed config."""
    config = haproxy_config(
        config_file_path=str(tmp_path / "h.cfg"), reload_command=None, **overrides
    )
    settings = settings_for(config)
    return settings.runtime_sockets[0], settings.shared_sockets


def test_synapses_own_socket_takes_another_name_than_a_configured_one(tmp_path: Path) -> None:
    """The docs' Airbnb example's socket_file_path beside a master socket haproxy.sock:
    both `stats socket` lines had one path (HAProxy kept the later: no expose-fd)."""
    own, shared = managed(
        tmp_path,
        socket_file_path=[str(tmp_path / "haproxy-synapse.sock")],
        managed={"master_socket_path": str(tmp_path / "haproxy.sock")},
    )
    assert own == str(tmp_path / "haproxy-synapse-2.sock")
    assert shared == (str(tmp_path / "haproxy-synapse.sock"),)


def test_an_operator_stats_socket_line_at_the_derived_path_counts_too(tmp_path: Path) -> None:
    taken = [f"stats socket unix@{tmp_path}/h-synapse.sock level admin",
             f"stats socket {tmp_path}/./h-synapse-2.sock level admin"]  # fmt: skip
    own, shared = managed(tmp_path, managed={}, **{"global": taken})
    assert own == str(tmp_path / "h-synapse-3.sock")
    assert shared == (f"{tmp_path}/h-synapse.sock", f"{tmp_path}/./h-synapse-2.sock")


def test_without_a_clash_the_name_stays(tmp_path: Path) -> None:
    own, _ = managed(tmp_path, managed={"master_socket_path": str(tmp_path / "m.sock")})
    assert own == str(tmp_path / "m-synapse.sock")  # (what a running HAProxy has: adopted)
