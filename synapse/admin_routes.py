"""The synapse daemon's admin server: /health, /status, /metrics, the status page, zones.

Its modules are imported in a thread while the first round runs (``synapse.daemon``).
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

from smartstack.admin import AdminServer
from synapse.daemon_status import service_health
from synapse.haproxy.settings import settings_for
from synapse.haproxy.traffic import TrafficSampler
from synapse.server_info import server_rows
from synapse.status_page import DATA_PATH, StatusPage, stats_url
from synapse.zone_api import ZoneAPI
from synapse.zone_apply import evacuation_applier

if TYPE_CHECKING:
    from synapse.daemon import SynapseDaemon


def admin_server(daemon: SynapseDaemon) -> AdminServer | None:
    """The admin server with synapse's routes (not started), or None without a port."""
    admin = daemon.config.admin
    if admin.port is None:
        return None
    server = AdminServer(
        admin.host, admin.port, daemon.registry, daemon.status, daemon.healthy, admin.token()
    )
    page = status_page(daemon)
    server.add_route("GET", "/", page.html)
    server.add_route("GET", DATA_PATH, page.data)
    server.add_route("GET", "/health/{service}", partial(service_health, daemon), probe=True)
    zone_api(daemon).add_routes(server)
    return server


def zone_api(daemon: SynapseDaemon) -> ZoneAPI:
    """POST /zones/<zone>/evacuate|restore: weights at runtime, kept in the state file."""
    reconciler = daemon.reconciler
    assert reconciler is not None
    apply = evacuation_applier(reconciler, daemon.controller, lambda: reconciler.state_cache)

    def services() -> dict[str, Any]:
        return {name: s.zone_routing for name, s in daemon.config.services.items()}

    return ZoneAPI(reconciler.zones.evacuations, services, apply, reconciler.zones.known_zones)


def status_page(daemon: SynapseDaemon) -> StatusPage:
    """The page reads traffic from the first admin socket HAProxy's runtime API has."""
    hap = daemon.config.haproxy
    sockets = settings_for(hap).runtime_sockets if hap else ()
    stats = hap.managed.stats if hap and hap.managed and hap.managed.stats.enabled else None
    return StatusPage(
        daemon.status,
        lambda: server_rows(*daemon._current_servers()),
        TrafficSampler(sockets[0]) if sockets else None,
        stats_url(stats.bind, stats.uri) if stats else None,
    )
