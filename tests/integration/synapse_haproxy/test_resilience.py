"""Retries, redispatch, observe and HAProxy checks in generated backends (managed mode
defaults, explicit keys, Airbnb mode untouched), and `haproxy -c` on the result."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from haproxy_helpers import (
    answered_by,
    eventually,
    haproxy_check,
    haproxy_config,
    render,
    section,
    server,
)

from synapse.config import ServiceConfig
from synapse.haproxy import server_wait
from synapse.model import DesiredService
from testbed.process import free_port

A = server("10.0.0.1", 8080, "a")
HTTP_RETRIES = [
    "retries 3",
    "retry-on conn-failure empty-response",
    "http-request disable-l7-retry unless { method GET HEAD OPTIONS }",
    "option redispatch 1",
]


def managed(tmp_path: Path, **overrides: Any):
    return haproxy_config(
        config_file_path=str(tmp_path / "h.cfg"),
        managed={"stop_on_exit": True},
        reload_command=None,
        **overrides,
    )


def svc(name: str = "web", method: str = "base", **haproxy: Any) -> DesiredService:
    discovery: dict[str, Any] = {"method": method}
    if method == "docker":
        discovery |= {"servers": ["unix:///var/run/docker.sock"], "container_port": 80}
    haproxy.setdefault("port", 3000)
    config = ServiceConfig.model_validate({"discovery": discovery, "haproxy": haproxy})
    return DesiredService(name, config, [A])


def backend(text: str, name: str = "web") -> list[str]:
    """The backend's lines but its servers and the wait for one (test_server_wait.py)."""
    return [line for line in section(text, f"backend {name}")
            if not line.startswith(("server ", *WAIT_LINES))]  # fmt: skip


WAIT_LINES = ("tcp-request inspect-delay", f"http-request lua.{server_wait.ACTION}",
              f"tcp-request content lua.{server_wait.ACTION}")  # fmt: skip


def test_managed_http_backend_retries_safely_by_default(tmp_path: Path):
    assert backend(render([svc()], managed(tmp_path)).text) == HTTP_RETRIES


def test_managed_tcp_backend_retries_connections_only(tmp_path: Path):
    text = render([svc(backend=["mode tcp"])], managed(tmp_path)).text
    assert backend(text) == ["mode tcp", "retries 3", "option redispatch 1"]


def test_operator_lines_win_over_the_managed_defaults(tmp_path: Path):
    config = managed(tmp_path, defaults=["mode http", "retries 7", "no option redispatch"])
    text = render([svc(listen=["retry-on conn-failure"])], config).text
    assert backend(text) == ["retry-on conn-failure"]


def test_airbnb_mode_gets_nothing_unless_asked():
    assert backend(render([svc()]).text) == []
    assert backend(render([svc(method="docker")]).text) == []
    asked = svc(retries={"count": 2, "retry_on": ["conn-failure"], "redispatch": False})
    assert backend(render([asked]).text) == [
        "retries 2",
        "retry-on conn-failure",
        "no option redispatch",
    ]


def test_retries_false_turns_the_default_off(tmp_path: Path):
    assert backend(render([svc(retries=False)], managed(tmp_path)).text) == []


def test_docker_servers_get_haproxy_checks_by_default(tmp_path: Path):
    text = render([svc(method="docker", retries=False)], managed(tmp_path)).text
    assert backend(text) == [
        "default-server check inter 2000 fastinter 500 downinter 500 rise 2 fall 2"
    ]
    path = svc(method="docker", retries=False, health_check={"path": "/health", "inter_ms": 500})
    assert backend(render([path], managed(tmp_path)).text) == [
        "option httpchk GET /health",
        "default-server check inter 500 rise 2 fall 2",
    ]
    off = svc(method="docker", retries=False, health_check={"enabled": False})
    assert backend(render([off], managed(tmp_path)).text) == []


def test_observe_marks_down_from_traffic_and_implies_checks(tmp_path: Path):
    text = render([svc(retries=False, observe={"error_limit": 3})], managed(tmp_path)).text
    assert backend(text) == [
        "default-server check inter 2000 rise 2 fall 2 "
        "observe layer7 error-limit 3 on-error mark-down"
    ]
    tcp = svc(retries=False, backend=["mode tcp"], observe={})
    assert "observe layer4" in backend(render([tcp], managed(tmp_path)).text)[-1]


def test_server_spec_sees_the_checks(tmp_path: Path):
    spec = render([svc(method="docker")], managed(tmp_path)).backends["web"].servers[A.name]
    assert spec.check
    assert "check inter 2000" in spec.add_options


def test_bad_keys_are_refused_with_the_key_named():
    with pytest.raises(ValueError, match="retry_on"):
        svc(retries={"retry_on": ["503"]})
    with pytest.raises(ValueError, match="path"):
        svc(health_check={"path": "no slash"})
    with pytest.raises(ValueError, match="method"):
        svc(retries={"methods": ["GET; rm"]})


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed")
def test_generated_lines_pass_haproxy_check(tmp_path: Path):
    services = [
        svc("web"),
        svc("tcp", backend=["mode tcp"], frontend=["mode tcp"], port=3001, observe={}),
        svc("dock", "docker", port=3002, health_check={"path": "/h"}, observe={"layer": "layer7"}),
    ]
    haproxy_check(render(services, managed(tmp_path)).text, tmp_path)


# --------------------------------------------------------------------------- real HAProxy


def dead_and_live(port: int, live, **haproxy: Any) -> DesiredService:
    """`web` with a live backend and a server where nothing listens (no checks: "UP")."""
    dead = server("127.0.0.1", free_port(), "dead")
    return DesiredService(
        "web",
        ServiceConfig.model_validate(
            {"discovery": {"method": "base"}, "haproxy": {"port": port, **haproxy}}
        ),
        [server("127.0.0.1", live.port, live.name), dead],
    )


async def test_requests_to_a_dead_server_are_redispatched(managed_factory, http_backend_factory):
    live = http_backend_factory("live")
    port = free_port()
    controller = managed_factory()
    await controller.apply([dead_and_live(port, live)], "t")
    await eventually(lambda: answered_by(port, 1), "HAProxy answering")
    assert await answered_by(port, 40) == {"live"}  # every request to `dead` went to `live`


async def test_without_retries_the_dead_server_fails_requests(
    managed_factory, http_backend_factory
):
    live = http_backend_factory("live")
    port = free_port()
    controller = managed_factory()
    # (`retries 0`: HAProxy's own default, 3 retries 1 s apart on the same server, is slow)
    await controller.apply([dead_and_live(port, live, retries=False, backend=["retries 0"])], "t")
    await eventually(lambda: answered_by(port, 1), "HAProxy answering")
    assert "503" in await answered_by(port, 8)  # what the default above prevents


async def test_haproxy_checks_take_a_dead_server_out(managed_factory, http_backend_factory):
    live = http_backend_factory("live")
    port = free_port()
    controller = managed_factory()
    checked = {"health_check": {"enabled": True, "inter_ms": 200, "fall": 1}}
    await controller.apply([dead_and_live(port, live, **checked)], "t")

    async def dead_is_down() -> bool:
        states = controller.status()["backends"]["web"]
        return any(name.startswith("dead") and s["state"] == "DOWN" for name, s in states.items())

    await eventually(dead_is_down, "HAProxy's check to mark the dead server DOWN")
