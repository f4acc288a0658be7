"""The docker watcher's default HAProxy checks bring servers back soon after a dockerd
restart: docker-proxy dies with dockerd (live-restore or not), every published port refuses
at once and the checks mark every server DOWN. At `inter 2000` alone they stayed out (503)
2.1 s after the ports were back (review s40, /tmp/rev/s40/docker/harness.py --live-restore
dockerd-restart6: 349 of 870 failed; with fastinter/downinter 500, see docs/docker.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from haproxy_helpers import haproxy_config

from synapse.config import ServiceConfig
from synapse.haproxy.resilience import extra_backend_lines


def _check_line(tmp_path: Path, method: str = "docker", **haproxy: Any) -> list[str]:
    hap = haproxy_config(config_file_path=str(tmp_path / "h.cfg"), reload_command=None,
                         managed={}, defaults=["mode http"])  # fmt: skip
    discovery: dict[str, Any] = {"method": method}
    if method == "docker":
        discovery |= {"servers": ["unix:///var/run/docker.sock"], "container_port": 80}
    service = ServiceConfig.model_validate(
        {"discovery": discovery, "haproxy": {"port": 3300, "retries": False, **haproxy}}
    )
    return [
        line for line in extra_backend_lines(hap, service, []) if line.startswith("default-server")
    ]


def test_docker_servers_are_checked_often_while_down_or_changing(tmp_path: Path):
    assert _check_line(tmp_path) == [
        "default-server check inter 2000 fastinter 500 downinter 500 rise 2 fall 2"
    ]


def test_an_operators_interval_is_left_as_given(tmp_path: Path):
    given = _check_line(tmp_path, health_check={"inter_ms": 5000, "rise": 3})
    assert given == ["default-server check inter 5000 rise 3 fall 2"]


def test_other_watchers_checks_are_unchanged(tmp_path: Path):
    assert _check_line(tmp_path, "base", health_check={"enabled": True}) == [
        "default-server check inter 2000 rise 2 fall 2"
    ]
