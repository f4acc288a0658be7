"""A backend whose servers have a ``maxconn`` gets ``timeout queue`` (synapse.haproxy.queue_wait):
without it HAProxy bounds the queue wait by ``timeout connect`` (1 s here), and a request
queued longer got a 503 (review s41: 452 of 1,522 at 15x the servers' capacity)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from haproxy_helpers import DEFAULTS, haproxy_config, managed_config, server, service

from synapse.config import ServiceConfig
from synapse.haproxy.queue_wait import QUEUE_DEFAULT
from synapse.haproxy.render import Renderer
from synapse.model import DesiredService


def queue_lines(config, **haproxy: Any) -> list[str]:
    web = service("web", [server("127.0.0.1", 8001, "a")], **haproxy)
    text = Renderer(config).render([web]).text
    return [line.strip() for line in text.splitlines() if line.strip().startswith("timeout queue")]


def both_modes() -> list[Any]:
    return [haproxy_config(), managed_config(Path("/tmp/synapse-test-qw"))]


@pytest.mark.parametrize("config", both_modes(), ids=["airbnb", "managed"])
def test_maxconn_queues_for_timeout_server_not_timeout_connect(config) -> None:
    assert "timeout connect 1s" in DEFAULTS and "timeout server 10s" in DEFAULTS
    assert queue_lines(config, maxconn=4) == ["timeout queue 10s"]


@pytest.mark.parametrize("config", both_modes(), ids=["airbnb", "managed"])
def test_no_maxconn_no_queue_line(config) -> None:
    assert queue_lines(config) == []


@pytest.mark.parametrize(
    "given",
    [
        {"timeout_queue": "2s"},
        {"backend": ["timeout queue 3s"]},
        {"listen": ["timeout queue 3s"]},
    ],
)
def test_an_operators_timeout_queue_is_kept(given: dict[str, Any]) -> None:
    lines = queue_lines(haproxy_config(), maxconn=4, **given)
    assert len(lines) == 1 and lines[0] in ("timeout queue 2s", "timeout queue 3s")


def test_defaults_timeout_queue_is_kept() -> None:
    config = haproxy_config(defaults=[*DEFAULTS, "timeout queue 500ms"])
    assert queue_lines(config, maxconn=4) == ["timeout queue 500ms"]  # (the defaults' own)


def test_the_services_timeout_server_counts() -> None:
    assert queue_lines(haproxy_config(), maxconn=4, backend=["timeout server 45s"]) == [
        "timeout queue 45s"
    ]


def test_without_timeout_server_the_default() -> None:
    config = haproxy_config(defaults=["mode http", "timeout connect 1s", "timeout client 5s"])
    assert queue_lines(config, maxconn=4) == [f"timeout queue {QUEUE_DEFAULT}"]


def test_without_timeout_connect_nothing_added() -> None:
    """HAProxy's queue wait is unbounded then: a bound would turn slow into a 503."""
    config = haproxy_config(defaults=["mode http", "timeout client 5s", "timeout server 5s"])
    assert queue_lines(config, maxconn=4) == []


def test_managed_mode_reads_maxconn_in_server_options() -> None:
    managed = managed_config(Path("/tmp/synapse-test-qw"))
    assert queue_lines(managed, server_options="check maxconn 3") == ["timeout queue 10s"]
    assert queue_lines(managed, backend=["default-server maxconn 3"]) == ["timeout queue 10s"]
    # Airbnb mode: the operator's own HAProxy lines keep HAProxy's meaning
    assert queue_lines(haproxy_config(), server_options="check maxconn 3") == []


@pytest.mark.parametrize(
    ("connect", "server", "queue"),
    [("5s", "2s", "5s"), ("3000", "2s", "3000"), ("1s", "2000", "2000"), ("1m", "30s", "1m")],
)
def test_never_shorter_than_the_timeout_connect_it_replaces(
    connect: str, server: str, queue: str
) -> None:
    """HAProxy's fallback waited `timeout connect`: the line must not cut that wait."""
    defaults = ["mode http", f"timeout connect {connect}", f"timeout server {server}"]
    assert queue_lines(haproxy_config(defaults=defaults), maxconn=4) == [f"timeout queue {queue}"]


@pytest.mark.parametrize("config", both_modes(), ids=["airbnb", "managed"])
def test_records_allowed_to_carry_maxconn_queue_too(config) -> None:
    """Which records carry a `maxconn` changes with membership: the backend line must not, so
    a policy that lets records carry one is enough (either mode: the policy is ours)."""

    def with_policy(**policy: Any) -> Any:
        data = {**config.model_dump(by_alias=True), "registry_server_options": policy}
        return type(config).model_validate(data)

    assert queue_lines(with_policy(allow=True)) == ["timeout queue 10s"]
    assert queue_lines(config) == []  # (records' options not allowed: no maxconn from them)
    no_maxconn = with_policy(allow=True, keywords=["weight"])
    assert queue_lines(no_maxconn) == []


def test_managed_mode_reads_maxconn_in_default_servers_options() -> None:
    def lines(config) -> list[str]:
        web = ServiceConfig.model_validate(
            {
                "discovery": {"method": "base"},
                "haproxy": {"port": 3000},
                "default_servers": [
                    {"host": "127.0.0.1", "port": 8001, "haproxy_server_options": "maxconn 2"}
                ],
            }
        )
        text = Renderer(config).render([DesiredService("web", web, [])]).text
        return [ln.strip() for ln in text.splitlines() if ln.strip().startswith("timeout queue")]

    assert lines(managed_config(Path("/tmp/synapse-test-qw"))) == ["timeout queue 10s"]
    assert lines(haproxy_config()) == []  # (Airbnb mode: the operator's text, HAProxy's meaning)
