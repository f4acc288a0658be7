"""The services ``synapse -k`` renders for ``haproxy -c`` (synapse.preflight).

Each service gets the servers it would have on a host whose registry answers: its
``default_servers``, or, when it has none and its discovery can list servers, one
placeholder (``synapse-check`` at 127.0.0.1). Without it such a service (the usual
case) had no server line in the check, so a typo in its ``haproxy.server_options``
passed ``-k`` and HAProxy refused the real config as soon as the registry listed a
server: the service was left out of HAProxy ("never valid" on a fresh host).

The placeholder is made as a discovered server is (``Server.from_registration``: the
port override, nerve weights) and goes through the zone router as the reconciler's do
(zone weights, backups, ``observe``, zone backends): ``haproxy -c`` sees the server
lines the daemon would write. A service whose discovery never lists a server (``base``,
the unsupported methods) gets none: its server lines are never written.
"""

from __future__ import annotations

from smartstack.record import Registration
from synapse.config import ServiceConfig, SynapseConfig
from synapse.discovery_config import DiscoveryConfig
from synapse.model import DesiredService, Server
from synapse.selection import default_selection
from synapse.watchers.registry import WATCHERS
from synapse.zone_apply import ZoneRouter

PLACEHOLDER_NAME = "synapse-check"  # server synapse-check_127.0.0.1:1: no record is named so
PLACEHOLDER_HOST = "127.0.0.1"
PLACEHOLDER_PORT = 1  # (never connected to: haproxy -c opens nothing)
PLACEHOLDER_ORIGIN = "synapse -k"


def discovers(discovery: DiscoveryConfig) -> bool:
    """Whether this discovery can ever list a server (``base`` and the methods synapse
    does not support report none: their services run on ``default_servers`` alone)."""
    if discovery.method == "multi":
        return any(discovers(child) for child in (discovery.watchers or {}).values())
    return discovery.method in WATCHERS and discovery.method != "base"


def check_servers(service: ServiceConfig, local_zone: str | None) -> list[Server]:
    """The servers ``-k`` renders for ``service``: its default servers, else the
    placeholder, as a discovered server of this host's zone would be."""
    defaults = default_selection(service, service.port_override).servers
    if defaults or not discovers(service.discovery):
        return list(defaults)
    routing = service.zone_routing
    labels = {routing.label: local_zone} if routing is not None and local_zone else {}
    use_weight = service.haproxy.use_nerve_weights
    record = Registration(PLACEHOLDER_HOST, PLACEHOLDER_PORT, PLACEHOLDER_NAME,
                          weight=1 if use_weight else None, labels=labels)  # fmt: skip
    return [
        Server.from_registration(
            record, PLACEHOLDER_ORIGIN, port_override=service.port_override, use_weight=use_weight
        )
    ]


def check_services(config: SynapseConfig) -> list[DesiredService]:
    """Every service with its ``check_servers``, routed as the reconciler hands them over."""
    router = ZoneRouter(config.zone)
    router.configure(config)
    services: list[DesiredService] = []
    for name, service in config.services.items():
        made = DesiredService(name, service, check_servers(service, config.zone))
        services += [made] if service.haproxy.disabled else router.routed(made)
    return services
