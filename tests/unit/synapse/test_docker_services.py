"""docker_services' pure part: container labels -> service blocks, problems named."""

from __future__ import annotations

from typing import Any

from smartstack.docker_events import ContainerInfo
from synapse.config import ServiceConfig
from synapse.docker_services import service_blocks
from synapse.edge_config import DockerServicesConfig


def container(name: str, labels: dict[str, str], running: bool = True) -> ContainerInfo:
    fields: dict[str, Any] = {
        "id": name * 4, "name": name, "image": "shop/web:1", "labels": labels,
        "running": running, "health": None, "started_at": "t0", "networks": {}, "ports": {},
    }  # fmt: skip
    return ContainerInfo(**fields)


def web(name: str, hosts: str, port: str = "80", **more: str) -> ContainerInfo:
    labels = {"smartstack.service": "web", "smartstack.port": port, "smartstack.hosts": hosts}
    return container(name, {**labels, **more})


def test_containers_of_one_service_share_it_and_their_routes_add_up():
    config = DockerServicesConfig(enabled=True, engine="unix:///run/d.sock")
    containers = [
        web("w1", "Web.test, www.web.test"),
        web("w2", "api.web.test", **{"smartstack.paths": "/api/"}),
        container(
            "w3",
            {"smartstack.service": "web", "smartstack.port": "80", "smartstack.hosts": "gone.test"},
            running=False,
        ),
        container("other", {"app": "x"}),
    ]
    blocks, problems = service_blocks(containers, config)
    assert problems == []
    assert blocks == {
        "web": {
            "discovery": {"method": "docker", "servers": ["unix:///run/d.sock"],
                          "label_selector": {"smartstack.service": "web", "smartstack.port": "80"},
                          "container_port": 80},
            "haproxy": {"routes": {"hosts": ["api.web.test", "web.test", "www.web.test"],
                                   "paths": ["/api/"]}},
        }
    }  # fmt: skip
    ServiceConfig.model_validate(blocks["web"])  # a valid service block


def test_bad_labels_are_named_and_left_out():
    config = DockerServicesConfig(enabled=True)
    blocks, problems = service_blocks(
        [web("w1", "a.test", port="http"), web("w2", "b.test", port="81,82"), web("w3", "c", "8")],
        config,
    )
    assert problems == [
        "container w1: smartstack.port 'http' must be the container's port",
        "container w3: smartstack.port 8 differs from 81,82",
    ]
    # the service's watcher selects on the port label as written: w1 and w3 are not served
    assert blocks["web"]["discovery"]["label_selector"] == {
        "smartstack.service": "web", "smartstack.port": "81,82"}  # fmt: skip
    assert blocks["web"]["discovery"]["container_port"] == 81
