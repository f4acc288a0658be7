"""A statsd host no lookup can find: a warning with what was meant, never a refused start."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from nerve.config import load_nerve_config
from smartstack.statsd import statsd_host_problem


@pytest.mark.parametrize(
    ("host", "said"),
    [
        (
            "localhost:8125",
            "'localhost:8125' looks like host:port: write host: 'localhost' and port: 8125",
        ),
        ("stats d", "'stats d' contains whitespace: did you mean 'statsd'?"),
        ("", "is empty: give the statsd server's name or IP address"),
    ],
)
def test_hosts_that_cannot_be_looked_up(host: str, said: str) -> None:
    assert statsd_host_problem(host) == said


@pytest.mark.parametrize("host", ["localhost", "::1", "127.0.0.1", "statsd.example.com", "fe80::1"])
def test_hosts_that_can(host: str) -> None:
    assert statsd_host_problem(host) is None


def test_nerve_loads_with_a_warning(tmp_path: Path) -> None:
    service = {"host": "127.0.0.1", "port": 80, "zk_hosts": ["127.0.0.1:2181"], "zk_path": "/w"}
    doc = {"instance_id": "a", "statsd": {"host": "localhost:8125"}, "services": {"web": service}}
    path = tmp_path / "nerve.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert load_nerve_config(path)[1] == [
        f"{path}: statsd.host: 'localhost:8125' looks like host:port: write host: 'localhost' "
        "and port: 8125 (no metrics are sent meanwhile)"
    ]
