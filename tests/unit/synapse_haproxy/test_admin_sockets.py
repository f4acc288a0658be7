"""Managed mode's admin sockets (synapse.haproxy.settings): synapse's own never shares a
path with a socket the operator configured; the operator's uncapped ones are capped."""

from __future__ import annotations

from pathlib import Path

from haproxy_helpers import haproxy_config

from synapse.haproxy.settings import (
    MASTER_ROOM,
    OWN_MAXCONN,
    SHARED_MAXCONN,
    managed_global,
    settings_for,
    stats_maxconn,
)


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


def rendered(lines: list[str]) -> tuple[list[str], int]:
    """(the `global` lines as rendered, `stats maxconn`) of a managed config."""
    config = haproxy_config(config_file_path="/run/h.cfg", managed={}, **{"global": lines})
    return managed_global(config), stats_maxconn(config)


def test_an_unlimited_operator_socket_is_capped_and_counted_so() -> None:
    """`maxconn 0` is no limit of its own: it was left uncapped (its clients could fill
    `stats maxconn`) yet counted as SHARED_MAXCONN."""
    lines, least = rendered(["stats socket /run/a.sock level admin maxconn 0 mode 600"])
    assert lines == ["stats socket /run/a.sock level admin mode 600 maxconn 10"]
    assert least == OWN_MAXCONN + SHARED_MAXCONN + MASTER_ROOM


def test_a_commented_operator_socket_gets_its_cap_before_the_comment() -> None:
    """After the `#`, HAProxy ignored the `maxconn 10` added; and a `maxconn` in the
    comment is none."""
    lines, least = rendered([
        "stats socket /run/b.sock level admin # for the scrapers",
        "stats socket /run/c.sock level admin #maxconn 50",
        "stats socket /run/d.sock level admin maxconn 4 # kept",
        "stats socket /run/e.sock level admin",
    ])  # fmt: skip
    assert lines == [
        "stats socket /run/b.sock level admin maxconn 10 # for the scrapers",
        "stats socket /run/c.sock level admin maxconn 10 #maxconn 50",
        "stats socket /run/d.sock level admin maxconn 4 # kept",
        "stats socket /run/e.sock level admin maxconn 10",
    ]
    assert least == OWN_MAXCONN + 3 * SHARED_MAXCONN + 4 + MASTER_ROOM
