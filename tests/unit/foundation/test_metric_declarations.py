"""Every Prometheus family nerve, synapse and synapse's HAProxy controller declare: its name,
type, labels, help text (and buckets), against ``metric_declarations.json``. Dashboards,
alerts and docs/ name these: a refactoring of the declarations must not change one. A family
added or changed on purpose: write the file again from the repo root
(``python -m tests.unit.foundation.test_metric_declarations --write``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from nerve.metrics import NerveMetrics
from synapse.haproxy.metrics import HAProxyMetrics
from synapse.haproxy.status import HAProxyStatus
from synapse.metrics import SynapseMetrics

SNAPSHOT = Path(__file__).with_name("metric_declarations.json")


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


def test_the_declared_families_are_the_snapshots() -> None:
    assert registries() == json.loads(SNAPSHOT.read_text())


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    SNAPSHOT.write_text(json.dumps(registries(), indent=1) + "\n")
