"""Prometheus' text format, read back from a daemon's /metrics: enough of it for us."""

from __future__ import annotations

import contextlib


def parse_prometheus(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Samples by metric name: [(labels, value), ...] (enough of the text format for us)."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):  # declared: a metric with no sample yet sums to 0
            out.setdefault(line.split()[2], [])
            continue
        if not line or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        name, _, rest = head.partition("{")
        labels = {}
        for part in rest.rstrip("}").split('",'):
            key, eq, val = part.partition('="')
            if eq:
                labels[key.strip(",")] = val.rstrip('"')
        with contextlib.suppress(ValueError):
            out.setdefault(name, []).append((labels, float(value)))
    return out


def metric_sum(
    metrics: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str
) -> float | None:
    """Sum of a metric's samples matching `labels`; None when synapse does not expose it."""
    if name not in metrics:
        return None
    return sum(v for lab, v in metrics[name] if all(lab.get(k) == x for k, x in labels.items()))
