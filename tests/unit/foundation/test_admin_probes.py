"""Which admin routes are health probes (answered while other clients hold every
connection, docs/health.md "Held connections"): /health and /health/<service>, not the
expensive or changing ones."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from nerve.admin import add_maintenance_routes
from smartstack import httpserver as web
from smartstack.admin import AdminServer


def test_health_routes_are_probes_and_the_rest_are_not() -> None:
    admin = AdminServer("127.0.0.1", 0, CollectorRegistry(), dict)
    add_maintenance_routes(admin, dict)

    def probe(method: str, path: str) -> bool:
        return admin.router.is_probe(web.Request(method, path, web.Headers()))

    assert probe("GET", "/health") and probe("HEAD", "/health") and probe("GET", "/health/web")
    for method, path in [("GET", "/status"), ("GET", "/metrics"), ("GET", "/maintenance"),
                         ("POST", "/maintenance/web"), ("DELETE", "/maintenance/web")]:  # fmt: skip
        assert not probe(method, path), (method, path)
