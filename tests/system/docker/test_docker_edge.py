"""Zero-config Docker edge through a real synapse process and a private dockerd: services
made from container labels alone are routed on the shared frontend; a new host of an
existing service costs no reload, a new service one."""

from __future__ import annotations

import time

from dockertestlib import Collector, watcher_context
from synapse_e2e import Synapse, http_get

from smartstack.docker_events import ContainerInfo
from synapse.config import ServiceConfig
from synapse.docker_services import service_blocks
from synapse.edge_config import DockerServicesConfig
from synapse.watchers.docker import DockerWatcher
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


async def test_containers_refused_by_docker_services_are_not_served(dockerd, container_factory):
    """Another port label than the service's, or a malformed one: refused (logged) and not a
    server of the service's watcher either."""
    good = container_factory("edge-good", labels=labels("web", "web.test"))
    other_port = {**labels("web", ""), "smartstack.port": "8080"}
    other = container_factory("edge-other-port", labels=other_port, environment={"PORT": "8080"})
    bad = container_factory("edge-bad", labels={**labels("web", ""), "smartstack.port": "eighty"})
    infos = [ContainerInfo.from_inspect(c.attrs) for c in (good, other, bad)]
    config = DockerServicesConfig(enabled=True, engine=dockerd.base_url)
    blocks, problems = service_blocks(infos, config)
    assert len(problems) == 2
    sink = Collector()
    service = ServiceConfig.model_validate(blocks["web"])
    watcher = DockerWatcher("web", service, sink, watcher_context())
    await watcher.start()
    try:
        await sink.wait_addresses([f"127.0.0.1:{good.ports['80/tcp'][0]['HostPort']}"])
    finally:
        await watcher.stop()


def test_a_recreated_container_keeps_its_service_without_a_reload(dockerd, container_factory):
    """`docker compose up` with a new image stops the one container, then runs the new one:
    the service outlives its last container (KEEP_GONE_S), so the new one comes at runtime.
    Before: removed and added back, 2 reloads, the new one served 1.4-2.0 s after it ran."""
    port = free_port()
    haproxy = {"shared_frontend": [f"bind 127.0.0.1:{port}"], "restart_interval": 2.0}
    docker = {"enabled": True, "engine": dockerd.base_url}
    old = container_factory("edge-solo1", labels=labels("solo", "solo.test"))
    with Synapse({}, haproxy=haproxy, docker_services=docker, startup_wait=0.5) as syn:
        wait_answer(port, "solo.test", (200, "edge-solo1"))
        reloads = settled_reloads(syn)
        old.remove(force=True)
        container_factory("edge-solo2", labels=labels("solo", "solo.test"))
        wait_answer(port, "solo.test", (200, "edge-solo2"), limit=10)
        assert settled_reloads(syn) == reloads  # (before: + 2)
