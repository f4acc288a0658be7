"""synapse's /status document: per service, the reconciler's, watcher's and HAProxy's view.

The HTML status page at ``/`` reads a compact form of it (``synapse.status_page``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def merge_service_status(
    services: Mapping[str, dict[str, Any]],
    watchers: Mapping[str, dict[str, Any]],
    haproxy: Mapping[str, Any] | None,
) -> dict[str, dict[str, Any]]:
    """Per service: the reconciler's view, its watcher's status and HAProxy's state of it.

    The controller reports running servers per backend (``backends.<backend>.<server>``:
    ``{state, weight, address}``); each service gets its own backend's part.
    """
    backends = (haproxy or {}).get("backends") or {}
    isolated = (haproxy or {}).get("isolated_services") or {}
    out: dict[str, dict[str, Any]] = {}
    for name, view in services.items():
        backend = view.get("backend", name)
        running = backends.get(backend) if isinstance(backends, dict) else None
        out[name] = {
            **view,
            "watcher": watchers.get(name),
            "haproxy": None if running is None else {"backend": backend, "servers": running},
            # haproxy -c refused its block: its last good one runs (synapse.haproxy.isolation)
            "config_isolated": isolated.get(name) if isinstance(isolated, dict) else None,
        }
    return out
