"""The note ``synapse -k`` prints for zone-routed HTTP services HAProxy checks by a connect.

A hung local zone (servers that accept connections, the kernel completes them from the
listen queue, but never answer: SIGSTOP, a deadlock, a long pause) passes the connect
check and ``observe layer4``: HAProxy never marks it DOWN, never uses the other zones'
backups, and every request sent to it waits ``timeout server`` and fails. Measured (review
s27, ``s8_hung.py tcp open``): 618 of 618 requests in a 15 s hang answered 504 after 5.0 s
each. The default stays a connect check on purpose: a default path could 404 and take
every server down, and HTTP checks from every sidecar cost the backends at fleet scale;
the note names the services and the fix (docs/zone-routing.md, "A hung zone"), and what
``response-timeout`` costs a GET slow by nature (review s38, ``probe/slow_get.py``, HAProxy
2.6: one 3 s GET, `timeout server 1s`, 2 + 2 servers: run 4 times, its 504 after 4.0 s
instead of 1.0 s; one server marked DOWN, as without it: the retried attempts' timeouts
are not counted by ``observe``, so the backups are not taken down with the local zone).
"""

from __future__ import annotations

from collections.abc import Mapping

from synapse.config import HAProxyConfig, ServiceConfig
from synapse.haproxy.routes import frontend_mode


def _http_checked(service: ServiceConfig) -> bool:
    """Whether HAProxy checks ``service``'s servers with an HTTP request (ours or its own
    ``option httpchk`` line), or not at all (health_check off: no failover to judge)."""
    own = service.haproxy
    if own.health_check.enabled is False or own.health_check.path is not None:
        return True
    return any(line.split()[:2] == ["option", "httpchk"] for line in [*own.backend, *own.listen])


def hung_zone_note(hap: HAProxyConfig, services: Mapping[str, ServiceConfig]) -> str | None:
    """The zone-routed HTTP services (managed mode: HAProxy fails over) a hung local zone
    would fail every request of; None: there are none."""
    if hap.managed is None:
        return None
    names = [
        name
        for name, service in sorted(services.items())
        if service.zone_routing is not None
        and not service.haproxy.disabled
        and frontend_mode([*service.haproxy.listen, *service.haproxy.backend], hap.defaults)
        == "http"
        and not _http_checked(service)
    ]
    if not names:
        return None
    return (
        f"zone-routed HTTP services checked by a connect only: {', '.join(names)}. A hung "
        "local zone (its servers accept connections but never answer: SIGSTOP, a deadlock, "
        "a long pause) passes that check and `observe layer4`: HAProxy never fails over to "
        "the other zones and every request sent to it fails after `timeout server` (measured: "
        "618 of 618 in a 15 s hang, 504 after 5 s each). Give each `health_check: {path: "
        "<a path the app answers cheaply>}` and `observe: {layer: layer7}`, keep `timeout "
        "check` well below `timeout server`, and add `response-timeout` to "
        "`retries.retry_on` so the requests already sent to it are answered by the other "
        "zones, late, not failed (its cost: a GET slower than `timeout server` by nature "
        "then runs on retries + 1 servers and gets its 504 after (retries + 1) x `timeout "
        "server`, so keep `timeout server` above the slowest normal GET); in an incident, "
        "POST /zones/<zone>/evacuate "
        '(docs/zone-routing.md, "A hung zone")'
    )
