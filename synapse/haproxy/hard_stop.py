"""A note when ``hard-stop-after`` would cut ``mode tcp`` connections after every reload.

After a reload an old worker keeps serving its connections, for at most ``hard-stop-after``
(``global``); then it closes every one left. An HTTP connection ends after its request
(synapse's ``idle-close-on-response``), but a ``mode tcp`` one (a database pool's, a
broker's) lasts as long as its client wants, and is cut: ``hard-stop-after 30s`` cut 3 of
3 TCP streams meant to last 45 s, 30 s after a reload for an unrelated service. A value
not above a TCP service's ``timeout client`` (how long HAProxy lets such a connection sit
idle) was chosen for HTTP: ``synapse -k`` and the start say so (docs/synapse-haproxy.md).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from synapse.config import HAProxyConfig, ServiceConfig
from synapse.haproxy.keywords import sort_lines
from synapse.haproxy.routes import frontend_mode
from synapse.server_options import haproxy_ms


def _value(lines: list[str], keyword: str) -> str | None:
    """The argument of the last line ``keyword ARG`` in ``lines`` (None: no such line)."""
    words = keyword.split()
    found = [line.split() for line in lines if line.split()[: len(words)] == words]
    return found[-1][len(words)] if found and len(found[-1]) > len(words) else None


def hard_stop_note(hap: HAProxyConfig, services: Mapping[str, ServiceConfig]) -> str | None:
    """Why ``hard-stop-after`` cuts these ``mode tcp`` services' connections; None: it
    does not (no such line, or above every TCP frontend's ``timeout client``)."""
    hard = _value(hap.global_, "hard-stop-after")
    hard_ms = haproxy_ms(hard) if hard else None
    if hard is None or hard_ms is None:
        return None
    cut = []
    for name, service in sorted(services.items()):
        own = service.haproxy
        if own.disabled or not own.has_frontend:
            continue
        frontend, _ = sort_lines(name, own, [])
        if frontend_mode(frontend, hap.defaults) != "tcp":
            continue
        client = _value(frontend, "timeout client") or _value(hap.defaults, "timeout client")
        client_ms = haproxy_ms(client) if client else math.inf  # (none: never idle out)
        if client_ms is not None and hard_ms <= client_ms:
            cut.append(f"{name} ({client or 'no timeout client'})")
    if not cut:
        return None
    return (
        f"haproxy.global: hard-stop-after {hard} is not above the timeout client of the mode "
        f"tcp services {', '.join(cut)}: after every reload the old worker cuts their "
        f"connections {hard} later; set it above their longest connection lifetime (a "
        "pool's max lifetime), docs/synapse-haproxy.md"
    )
