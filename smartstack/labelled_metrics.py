"""Counters and gauges with a child per label set that cost a few dozen bytes, not ~700.

prometheus_client makes each child (one per service for synapse's per-service figures) a
full metric object: an instance dict of ten attributes, a value object with its own lock,
a label tuple; ~3.4 KB per service for synapse's five per-service metrics, 3.4 MB at
1,000 services (tracemalloc, issue 15). Here a family keeps its children in one dict and
a child is a one- or two-slot object; the family is a collector of the registry, so the exposition
(``generate_latest``, ``get_sample_value``) is the same as prometheus_client's: the same
names, labels, ``_total`` and ``_created`` samples.

The API is the subset synapse uses: ``family.labels(*values).inc(amount)`` for a counter,
``.set(value)`` for a gauge, and ``forget(value)`` drops every child labelled with it (a
service that left the config must not keep reporting its last gauge values). Increments are
taken under a lock: a child may be counted from any thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client import metrics as prometheus_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

_LOCK = threading.Lock()  # increments of every child (any thread may count)


class _CounterChild:
    __slots__ = ("created", "value")

    def __init__(self) -> None:
        self.value: float = 0  # an int while the amounts are: small ints are not allocated
        self.created = time.time()

    def inc(self, amount: float = 1) -> None:
        if amount < 0:
            raise ValueError("Counters can only be incremented by non-negative amounts.")
        with _LOCK:
            self.value += amount


class _GaugeChild:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value: float = 0

    def inc(self, amount: float = 1) -> None:
        with _LOCK:
            self.value += amount

    def set(self, value: float) -> None:
        self.value = value if type(value) is int else float(value)


_Child = _CounterChild | _GaugeChild


class _Family:
    child: type[_CounterChild] | type[_GaugeChild]

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._children: dict[tuple[str, ...], _Child] = {}
        if registry is not None:
            registry.register(self)

    def labels(self, *values: str) -> _Child:
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name}: labels {self.labelnames}, got {values!r}")
        child = self._children.get(values)
        if child is None:
            key = tuple(str(value) for value in values)
            with _LOCK:
                child = self._children.setdefault(key, self.child())
        return child

    def forget(self, value: str, label: str = "service") -> int:
        """Drop the children whose ``label`` is ``value``; how many. No such label: none."""
        if label not in self.labelnames:
            return 0
        at = self.labelnames.index(label)
        with _LOCK:
            gone = [values for values in self._children if values[at] == value]
            for values in gone:
                del self._children[values]
        return len(gone)

    def _family(self) -> Metric:
        raise NotImplementedError

    def describe(self) -> list[Metric]:
        """The family without samples: lets the registry refuse a second of the same name."""
        return [self._family()]

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        with _LOCK:
            children = list(self._children.items())
        for values, child in children:
            self._add(family, list(values), child)
        yield family

    def _add(self, family: Metric, values: list[str], child: _Child) -> None:
        raise NotImplementedError


class LabelledCounter(_Family):
    child = _CounterChild

    def _family(self) -> Metric:
        return CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def _add(self, family: Metric, values: list[str], child: _Child) -> None:
        assert isinstance(family, CounterMetricFamily) and isinstance(child, _CounterChild)
        # (PROMETHEUS_DISABLE_CREATED_SERIES turns `_created` off there: here too)
        created = child.created if getattr(prometheus_metrics, "_use_created", True) else None
        family.add_metric(values, child.value, created=created)


class LabelledGauge(_Family):
    child = _GaugeChild

    def _family(self) -> Metric:
        return GaugeMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def _add(self, family: Metric, values: list[str], child: _Child) -> None:
        assert isinstance(family, GaugeMetricFamily)
        family.add_metric(values, child.value)
