"""A request queued for a full server waits as long as a server may take, not ``timeout connect``.

With a per-server ``maxconn`` (the ``maxconn`` key, ``maxconn`` in the service's server
options, records allowed to carry one: ``_capped``), requests beyond it wait in HAProxy's
queue. HAProxy 2.6 bounds that wait by ``timeout queue``, and without one by ``timeout
connect`` (a compatibility fallback): with the usual ``timeout connect 1s`` every
request queued 1 s got a 503 (review s41: 3 servers at ``maxconn 4``, 180 clients, 452
of 1,522 requests 503 after 1.0 s; with ``timeout queue 30s`` 0 of 1,128, the slowest
1.5 s). So, when no ``timeout
queue`` is set anywhere (``timeout_queue``, the service's lines, ``defaults``) and a
``timeout connect`` is (without it HAProxy's queue wait is unbounded already), the
backend gets ``timeout queue`` equal to the ``timeout server`` in effect (QUEUE_DEFAULT
without one): a queued request is slow, not an error, for as long as a server's answer
may take. Never shorter than the ``timeout connect`` it replaces (``timeout connect 3s``,
``timeout server 2s``: 2 s would have cut a wait HAProxy's own fallback let run 3 s).
"""

from __future__ import annotations

from collections.abc import Sequence

from synapse.config import HAProxyConfig, ServiceConfig
from synapse.server_options import haproxy_ms

QUEUE_DEFAULT = "30s"  # no `timeout server` in effect: as our examples' `timeout server`


def _timeout(lines: Sequence[str], name: str) -> str | None:
    """The value of the last ``timeout <name>`` line of ``lines`` (None: none)."""
    value = None
    for line in lines:
        tokens = line.lower().split()
        if tokens[:2] == ["timeout", name] and len(tokens) > 2:
            value = tokens[2]
    return value


def _capped(config: HAProxyConfig, service: ServiceConfig, lines: Sequence[str]) -> bool:
    """Whether the service's servers may have a ``maxconn``: the key; records allowed to
    carry one (``registry_server_options``: which of them do changes with membership, the
    backend line must not); in managed mode also the service's ``server_options``, a
    ``default-server`` line or a ``default_servers`` entry's options (Airbnb mode: the
    operator's own HAProxy text keeps HAProxy's meaning)."""
    hap = service.haproxy
    if hap.maxconn is not None:
        return True
    policy = config.registry_server_options
    if policy.allow and "maxconn" in policy.keywords:
        return True
    if config.managed is None:
        return False
    default_servers = [ln for ln in lines if ln.split()[:1] == ["default-server"]]
    entries = [entry.haproxy_server_options or "" for entry in service.default_servers]
    options = [hap.server_options or "", *default_servers, *entries]
    return any("maxconn" in text.split() for text in options)


def queue_lines(
    config: HAProxyConfig, service: ServiceConfig, backend_lines: Sequence[str]
) -> list[str]:
    """``timeout queue`` for a backend whose servers queue (see the module docstring)."""
    if not _capped(config, service, [*config.defaults, *backend_lines]):
        return []
    # (the service's lines win over `defaults`: last one counts, defaults first)
    given = [*config.defaults, *backend_lines]
    connect = _timeout(given, "connect")
    if _timeout(given, "queue") is not None or connect is None:
        return []
    server = _timeout(given, "server") or QUEUE_DEFAULT
    # (the longer of the two: HAProxy's fallback, connect, is a wait the line must not cut)
    longer = (haproxy_ms(connect) or 0) > (haproxy_ms(server) or 0)
    return [f"timeout queue {connect if longer else server}"]
