"""Every Prometheus family nerve, synapse and synapse's HAProxy controller declare, read from
real registries (not from the source: the declarations are table-driven,
smartstack/metric_families.py)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry

from nerve.metrics import NerveMetrics
from synapse.haproxy.metrics import HAProxyMetrics
from synapse.haproxy.status import HAProxyStatus
from synapse.metrics import SynapseMetrics


def declared(registry: CollectorRegistry) -> list[dict[str, Any]]:
    """The registry's declared families (prometheus_client's and smartstack.labelled_metrics'),
    sorted by name; the process and platform collectors are prometheus_client's business."""
    families = []
    for collector in registry._collector_to_names:
        labels = getattr(collector, "_labelnames", getattr(collector, "labelnames", None))
        if labels is None:
            continue
        for metric in collector.describe():
            families.append(
                {
                    "name": metric.name,
                    "type": metric.type,
                    "class": type(collector).__name__,
                    "labels": list(labels),
                    "help": metric.documentation,
                    "buckets": [str(b) for b in getattr(collector, "_upper_bounds", [])],
                }
            )
    return sorted(families, key=lambda family: family["name"])


def registries() -> dict[str, list[dict[str, Any]]]:
    nerve, synapse, haproxy = CollectorRegistry(), CollectorRegistry(), CollectorRegistry()
    NerveMetrics(nerve)
    SynapseMetrics(synapse)
    HAProxyMetrics(haproxy, problems=lambda: [], info=HAProxyStatus)
    return {"nerve": declared(nerve), "synapse": declared(synapse), "haproxy": declared(haproxy)}


# The sample names a family of each type exposes (a counter's family name lacks its _total).
SAMPLE_SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum",
                   "_count"), "summary": ("_sum", "_count"), "info": ("_info",),
                   "stateset": ("",), "unknown": ("",)}  # fmt: skip


def sample_names() -> set[str]:
    """Every sample name the three registries can expose."""
    return {
        family["name"] + suffix
        for families in registries().values()
        for family in families
        for suffix in SAMPLE_SUFFIXES[family["type"]]
    }
