"""``synapse_server_info``: what HAProxy's own exporter cannot know about a server.

HAProxy exports traffic per ``proxy``/``server`` (``haproxy_server_*``) but not where a
server came from or which zone it is in. This info-style gauge is 1 per server synapse
wants in a backend, labelled ``service``, ``proxy`` (the backend, as HAProxy names it),
``server`` (as HAProxy names it), ``origin`` and ``zone``, so PromQL can join them::

    haproxy_server_status{state="UP"} * on (proxy, server) group_left (zone) synapse_server_info

Cardinality: one series per current server (gone when the server goes: the collector
reads the reconciler at scrape time); ``origin`` is the kind only (``zookeeper``,
``etcd``, ``default``, ``state_file``...), not the record path, which changes each time
a node registers again; ``zone`` is the server's zone label, ``unknown`` without one
(zone names are checked: at most 64 safe characters). Past ``MAX_SERIES`` servers the
rest are counted in ``synapse_server_info_skipped`` instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from synapse.config import ServiceConfig
from synapse.selection import Selection
from synapse.zones import zone_of

MAX_SERIES = 20_000
Row = tuple[str, str, str, str, str]  # service, proxy, server, origin, zone
Source = Callable[[], tuple[Mapping[str, Selection], Mapping[str, ServiceConfig]]]


def origin_kind(origin: str) -> str:
    """``zookeeper:/services/web/n_0001`` -> ``zookeeper``."""
    return origin.partition(":")[0] or "unknown"


def server_rows(
    selections: Mapping[str, Selection], services: Mapping[str, ServiceConfig]
) -> Iterator[Row]:
    for name, selection in sorted(selections.items()):
        config = services.get(name)
        if config is None:
            continue
        proxy = config.haproxy.backend_name or name
        label = config.zone_routing.label if config.zone_routing else "zone"
        for server in selection.servers:
            zone = zone_of(server.labels, label)
            yield name, proxy, server.name, origin_kind(server.origin), zone


class ServerInfoCollector(Collector):
    """Reads the current servers at each scrape (``source``: selections and configs)."""

    def __init__(self, source: Source, limit: int = MAX_SERIES) -> None:
        self._source = source
        self._limit = limit

    def collect(self) -> Iterator[GaugeMetricFamily]:
        info = GaugeMetricFamily(
            "synapse_server_info",
            "1 per server synapse wants in a backend: its origin kind and zone",
            labels=["service", "proxy", "server", "origin", "zone"],
        )
        skipped = 0
        for count, row in enumerate(server_rows(*self._source())):
            if count >= self._limit:
                skipped += 1
                continue
            info.add_metric(list(row), 1)
        yield info
        yield GaugeMetricFamily(
            "synapse_server_info_skipped",
            f"Servers left out of synapse_server_info (more than {self._limit})",
            value=skipped,
        )
