"""Zero-config Docker edge through a real synapse process and a private dockerd: services
made from container labels alone are routed on the shared frontend; a new host of an
existing service costs no reload, a new service one."""

from __future__ import annotations

import time

from synapse_e2e import Synapse, http_get

from testbed.process import free_port


def answer(port: int, host: str) -> tuple[int, str]:
    try:
        status, body = http_get(port, host, timeout=1.0)
        return status, body.strip()
    except OSError:
        return 0, ""


def wait_answer(port: int, host: str, expected: tuple[int, str], limit: float = 30.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if answer(port, host) == expected:
            return
        time.sleep(0.05)
    raise AssertionError(f"{host}: {answer(port, host)}, not {expected}, after {limit}s")


def settled_reloads(syn: Synapse) -> int:
    """The reload count once it stopped moving (a new worker serves a moment before the
    reload that started it is counted)."""
    before = syn.status()["haproxy"]["reloads"]
    for _ in range(20):
        time.sleep(1.5)
        now = syn.status()["haproxy"]["reloads"]
        if now == before and syn.status()["haproxy"]["pending_reload"] is None:
            return now
        before = now
    raise AssertionError("the reload count never settled")


def labels(service: str, hosts: str) -> dict[str, str]:
    return {"smartstack.service": service, "smartstack.port": "80", "smartstack.hosts": hosts}


def test_services_from_container_labels(dockerd, container_factory):
    port = free_port()
    haproxy = {"shared_frontend": [f"bind 127.0.0.1:{port}"]}
    docker = {"enabled": True, "engine": dockerd.base_url}
    container_factory("edge-web1", labels=labels("web", "web.test"))
    with Synapse({}, haproxy=haproxy, docker_services=docker, startup_wait=0.5) as syn:
        wait_answer(port, "web.test", (200, "edge-web1"))
        assert answer(port, "other.test") == (404, "")
        reloads = settled_reloads(syn)

        # A second container of web brings a new host: a server and a route, no reload.
        container_factory("edge-web2", labels=labels("web", "www.web.test"))
        deadline = time.monotonic() + 30
        while answer(port, "www.web.test")[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert answer(port, "www.web.test")[0] == 200, syn.log(80)
        last = syn.status()["haproxy"].get("last_reload")
        assert settled_reloads(syn) == reloads, last
        assert sorted(syn.status()["services"]) == ["web"]

        # A new service: one reload.
        container_factory("edge-api1", labels=labels("api", "api.test"))
        wait_answer(port, "api.test", (200, "edge-api1"))
        assert settled_reloads(syn) == reloads + 1
        assert answer(port, "web.test")[0] == 200
