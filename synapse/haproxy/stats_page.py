"""HAProxy's own stats page and Prometheus exporter, as a section of the generated config.

Managed mode (``haproxy.managed.stats``, on by default) adds::

    frontend synapse_stats
        mode http
        bind 127.0.0.1:8404
        http-request use-service prometheus-exporter if { path /metrics }
        stats enable
        stats uri /stats
        stats refresh 10s
        ...

so the data plane (``haproxy_backend_*``, ``haproxy_server_*``) is scraped from HAProxy
itself: synapse writes no exporter of its own. Airbnb-mode configs write the same lines
in ``extra_sections`` (docs/observability.md).
"""

from __future__ import annotations

from typing import Any

from synapse.config import HAProxyConfig, HAProxyStats

SECTION_TITLE = "frontend synapse_stats"  # not `stats`: Airbnb configs name theirs so


def stats_lines(stats: HAProxyStats) -> list[str]:
    """The lines of the stats frontend."""
    return [
        "mode http",
        f"bind {stats.bind}",
        # Before `stats uri`: the exporter answers its own path, the page the rest.
        f"http-request use-service prometheus-exporter if {{ path {stats.metrics_path} }}",
        "stats enable",
        f"stats uri {stats.uri}",
        f"stats refresh {stats.refresh}s",
        "stats show-legends",
        "no log",  # scrapes every few seconds would flood an access log
        "timeout client 30s",  # whatever `defaults` says (or not): no warning
    ]


def stats_sections(config: HAProxyConfig) -> list[dict[str, Any]]:
    """The extra section(s) the template gets: the stats frontend when enabled."""
    if config.managed is None or not config.managed.stats.enabled:
        return []
    return [{"title": SECTION_TITLE, "lines": stats_lines(config.managed.stats)}]
