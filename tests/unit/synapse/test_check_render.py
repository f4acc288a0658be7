"""The servers `synapse -k` renders (synapse/check_render.py): pure, no HAProxy."""

from __future__ import annotations

from typing import Any

import pytest

from synapse.check_render import check_servers, check_services, discovers
from synapse.config import SynapseConfig

ZK = {"method": "zookeeper", "hosts": ["h:1"], "path": "/web"}


def config(zone: str | None = None, **service: Any) -> SynapseConfig:
    block = {"discovery": ZK, **service}
    return SynapseConfig.model_validate(
        {
            "zone": zone,
            "services": {"web": block},
            "haproxy": {"do_writes": False, "do_reloads": False},
        }
    )


def servers(**service: Any) -> list[str]:
    web = config(**service).services["web"]
    return [f"{s.name} {s.host}:{s.port} w={s.weight}" for s in check_servers(web, None)]


@pytest.mark.parametrize(
    ("discovery", "expected"),
    [
        (ZK, True),
        ({"method": "etcd", "endpoints": ["127.0.0.1:2379"], "path": "/w"}, True),
        ({"method": "base"}, False),  # never lists a server: no server line is ever written
        ({"method": "ec2tag"}, False),  # not supported: runs on its default servers
        ({"method": "multi", "watchers": {"a": {"method": "base"}}}, False),
        ({"method": "multi", "watchers": {"a": {"method": "base"}, "b": ZK}}, True),
    ],
)
def test_only_a_discovery_that_lists_servers_gets_the_placeholder(discovery, expected):
    resolver = {"resolver": {"method": "union"}} if discovery["method"] == "multi" else {}
    web = config(discovery={**discovery, **resolver}).services["web"]
    assert discovers(web.discovery) is expected
    assert len(check_servers(web, None)) == expected


def test_the_placeholder_is_made_as_a_discovered_server_is() -> None:
    assert servers() == ["synapse-check_127.0.0.1:1 127.0.0.1:1 w=None"]
    overridden = ["synapse-check_127.0.0.1:8443 127.0.0.1:8443 w=None"]
    assert servers(haproxy={"server_port_override": 8443}) == overridden
    assert servers(backend_port_override=8443) == overridden
    weighted = servers(haproxy={"use_nerve_weights": True})
    assert weighted == ["synapse-check_127.0.0.1:1 127.0.0.1:1 w=1"]
    # default servers stand in as before, the placeholder is not added to them
    assert servers(default_servers=[{"name": "a", "host": "10.0.0.1", "port": 80}]) == [
        "a_10.0.0.1:80 10.0.0.1:80 w=None"
    ]


def test_a_zone_routed_service_is_routed_as_the_reconciler_hands_it_over() -> None:
    routed = config("az1", zone_routing={"zones": ["az1", "az2"], "header": "X-Zone"},
                    haproxy={"port": 3300, "listen": ["mode http"]})  # fmt: skip
    web, *zone_backends = check_services(routed)
    [placeholder] = web.servers
    assert placeholder.labels == (("zone", "az1"),), "a server of this host's zone"
    assert placeholder.weight == 256 and not placeholder.backup, "an explicit zone weight"
    assert web.zones == ("az1", "az2")
    assert [b.name for b in zone_backends] == ["web_zone_az1", "web_zone_az2"]
    disabled = config("az1", zone_routing={}, haproxy={"disabled": True})
    [unrouted] = check_services(disabled)
    assert unrouted.servers[0].weight is None  # (not rendered: a disabled service)
