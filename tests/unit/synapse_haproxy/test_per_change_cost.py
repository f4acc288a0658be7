"""Per-change work that must not loop over every service: the routes, the zone map, the
isolation's last good blocks and the zone backends keep their result when the services
that changed cannot change it, and recompute it when they can."""

from __future__ import annotations

from dataclasses import replace

from haproxy_helpers import server, service
from prometheus_client import CollectorRegistry

from synapse.config import ServiceConfig
from synapse.contract import ApplyOutcome, ApplyResult
from synapse.haproxy.isolation import Isolation
from synapse.haproxy.metrics import HAProxyMetrics
from synapse.haproxy.route_sync import RouteSync
from synapse.haproxy.routes import RouteMaps
from synapse.haproxy.zone_map import ZoneMapSync
from synapse.identity import moved, same_objects
from synapse.zone_backends import ZoneBackends


def test_moved_and_same_objects_compare_by_identity():
    a, b, c = [1000], [1000], [2000]
    assert same_objects([a, c], [a, c]) and not same_objects([a, c], [b, c])
    assert not same_objects([a], [a, c])
    assert list(moved([a, c, b], [a, c, a])) == [2]


def _fleet(n: int, **haproxy):
    return [service(f"s{i}", [server("10.0.0.1", 8000 + i, "a")], **haproxy) for i in range(n)]


def test_routes_stay_when_a_server_changes_and_follow_a_route_change():
    sync = RouteSync([], HAProxyMetrics(CollectorRegistry()))
    routed = service("shop", [], backend_only=True, routes={"hosts": ["shop.test"]})
    services = [*_fleet(3), routed]
    sync.want(services)
    wanted = sync.wanted
    assert wanted == RouteMaps(exact={"shop.test/": "shop"})
    # a server of one service changed: same maps, the very same object (nothing compiled)
    services = [service("s1", [server("10.0.0.9", 1, "b")]), *services[1:]]
    sync.want(services)
    assert sync.wanted is wanted and sync._inputs == services
    # the routed service's servers changed: same routes
    moved_shop = service(
        "shop", [server("10.0.0.2", 80, "x")], backend_only=True, routes={"hosts": ["shop.test"]}
    )
    services = [*services[:3], moved_shop]
    sync.want(services)
    assert sync.wanted is wanted
    # its hosts changed: compiled again
    renamed = service("shop", [], backend_only=True, routes={"hosts": ["www.shop.test"]})
    services = [*services[:3], renamed]
    sync.want(services)
    assert sync.wanted == RouteMaps(exact={"www.shop.test/": "shop"})
    # a service without routes gains some
    services = [service("s0", [], routes={"hosts": ["s0.test"]}), *services[1:]]
    sync.want(services)
    assert sync.wanted == RouteMaps(exact={"www.shop.test/": "shop", "s0.test/": "s0"})


def test_the_zone_map_follows_only_changes_of_sticky_services(tmp_path):
    sync = ZoneMapSync([], HAProxyMetrics(CollectorRegistry()))
    services = _fleet(3)
    sync.want(services)
    assert sync.wanted is None
    services = [service("s0", [server("10.0.0.9", 1, "b")]), *services[1:]]
    sync.want(services)
    assert sync.wanted is None and sync._inputs == services
    plain = service("s1", [server("10.0.0.1", 1, "a", labels={"az": "z1"})], port=3001)
    config = ServiceConfig.model_validate(
        {**plain.config.model_dump(), "zone_routing": {"label": "az", "sticky": "zone"}}
    )
    zoned = replace(plain, config=config, zones=("z1",))
    sync.want([services[0], zoned, services[2]])
    assert sync.wanted == {"s1/a_10.0.0.1:1": "z1"}
    sync.want(services)  # no longer sticky: its entry goes
    assert sync.wanted is None


def test_isolation_records_last_good_blocks_of_the_services_that_changed():
    isolation = Isolation(CollectorRegistry())
    done = ApplyResult(reload=ApplyOutcome.DONE)
    services = _fleet(3)
    assert isolation.substitute(services) is services  # nothing isolated: no copy
    isolation.settled(services, done)
    assert set(isolation._good) == {"s0", "s1", "s2"}
    changed = service("s1", [], backend=["retries 2"])
    isolation.settled([services[0], changed, services[2]], done)
    assert isolation._good["s1"] is changed.config
    refused = ApplyResult(reload=ApplyOutcome.INVALID)
    other = service("s2", [], backend=["retries 3"])
    isolation.settled([services[0], changed, other], refused)  # not accepted: kept
    assert isolation._good["s2"] is services[2].config


def test_forgetting_a_service_without_zone_state_leaves_the_others_alone():
    backends = ZoneBackends()
    backends._owners["web-zone-b"] = ("web", "b")
    backends._seen["web"] = {"b"}
    backends.forget("api")  # never zone-routed: nothing to scan
    assert backends._owners == {"web-zone-b": ("web", "b")}
    backends.forget("web")
    assert backends._owners == {} and "web" not in backends._seen
