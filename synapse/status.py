"""synapse's /status document: per service, the reconciler's, watcher's and HAProxy's view.

The HTML status page at ``/`` reads a compact form of it (``synapse.status_page``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from synapse.selection import Selection, filters_text

if TYPE_CHECKING:
    from synapse.reload_diff import ServiceState


def merge_service_status(
    services: Mapping[str, dict[str, Any]],
    watchers: Mapping[str, dict[str, Any]],
    haproxy: Mapping[str, Any] | None,
) -> dict[str, dict[str, Any]]:
    """Per service: the reconciler's view, its watcher's status and HAProxy's state of it.

    The controller reports running servers per backend (``backends.<backend>.<server>``:
    ``{state, weight, address}``); each service gets its own backend's part. A backend in
    ``unread_backends`` runs, but its servers are not read from the new process yet (just
    reloaded or started): ``servers`` is null and ``unread`` true until they are.
    """
    backends = (haproxy or {}).get("backends") or {}
    unread = set((haproxy or {}).get("unread_backends") or ())
    isolated = (haproxy or {}).get("isolated_services") or {}
    out: dict[str, dict[str, Any]] = {}
    for name, view in services.items():
        backend = view.get("backend", name)
        running = backends.get(backend) if isinstance(backends, dict) else None
        state = None
        if backend in unread:
            state = {"backend": backend, "servers": None, "unread": True}
        elif running is not None:
            state = {"backend": backend, "servers": running, "unread": False}
        out[name] = {
            **view,
            "watcher": watchers.get(name),
            "haproxy": state,
            # haproxy -c refused its block: its last good one runs (synapse.haproxy.isolation)
            "config_isolated": isolated.get(name) if isinstance(isolated, dict) else None,
        }
    return out


def service_status(services: Mapping[str, ServiceState]) -> dict[str, dict[str, Any]]:
    """Per service, the reconciler's view: its backend, its servers and where they came from."""
    out: dict[str, dict[str, Any]] = {}
    for name, service in services.items():
        selection = service.selection if service.selection is not None else Selection()
        out[name] = {
            "backend": service.config.haproxy.backend_name or name,
            "origin": selection.origin,
            "servers": [
                {
                    "name": s.name,
                    "host": s.host,
                    "port": s.port,
                    "weight": s.weight,
                    "origin": s.origin,
                    **({"options": s.registry_options} if s.registry_options else {}),
                }
                for s in selection.servers
            ],
            "reported": service.report is not None,
            # every record listed was dropped by label_filters (options_report says it)
            "label_filters_match_nothing": {
                "records": selection.unmatched,
                "filters": filters_text(service.config.discovery.label_filters),
            }
            if selection.unmatched
            else None,
            "haproxy_disabled": service.config.haproxy.disabled,
        }
    return out
