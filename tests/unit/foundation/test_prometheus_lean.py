"""smartstack.prometheus_lean.text writes what prometheus_client.generate_latest writes,
byte for byte: every metric type, the awkward label values and help texts, timestamps,
NaN and infinities, the daemons' own registries."""

from __future__ import annotations

import math

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Enum,
    Gauge,
    Histogram,
    Info,
    Summary,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeHistogramMetricFamily,
    GaugeMetricFamily,
    UnknownMetricFamily,
)
from prometheus_client.registry import Collector

from smartstack import prometheus_lean


class Odd(Collector):
    """Families a client library seldom writes: timestamps, a gauge histogram, untyped."""

    def collect(self):
        gauge = GaugeMetricFamily("odd_gauge", 'with "quotes", a \\ and a\nnewline', labels=["l"])
        gauge.add_metric(['va"l\\ue\nx'], math.nan, timestamp=1_700_000_000.25)
        gauge.add_metric(["ünïcode ✓"], math.inf)
        gauge.add_metric(["neg"], -math.inf)
        yield gauge
        counter = CounterMetricFamily("odd_events", "help", labels=["k"], created=12.5)
        counter.add_metric(["a"], 3.0, created=1.5)
        yield counter
        histogram = GaugeHistogramMetricFamily("odd_queue", "help", gsum_value=7.0)
        histogram.add_metric([], [("1.0", 2.0), ("+Inf", 5.0)], gsum_value=7.0)
        yield histogram
        unknown = UnknownMetricFamily("odd_thing", "help")
        unknown.add_metric([], 1e-9)
        yield unknown


def test_every_metric_type_is_written_as_generate_latest_writes_it() -> None:
    registry = CollectorRegistry()
    Counter("c", "a counter", ["path"], registry=registry).labels("/a b").inc(2)
    Gauge("g", "a gauge", registry=registry).set(1.5e20)
    Histogram("h", "a histogram", ["s"], registry=registry).labels("x").observe(0.3)
    Summary("s", "a summary", registry=registry).observe(4)
    Info("i", "an info", registry=registry).info({"version": "1.2", "sha": "abc"})
    Enum("e", "an enum", states=["up", "down"], registry=registry).state("down")
    registry.register(Odd())
    assert prometheus_lean.text(registry) == generate_latest(registry)
    assert prometheus_lean.CONTENT_TYPE == CONTENT_TYPE_LATEST  # (an upgrade that changes it)
    assert prometheus_lean.text(CollectorRegistry()) == generate_latest(CollectorRegistry())


def test_the_daemons_registries_are_written_the_same() -> None:
    from nerve.metrics import NerveMetrics
    from synapse.metrics import SynapseMetrics

    for metrics in (SynapseMetrics(CollectorRegistry()), NerveMetrics()):
        families = list(metrics.registry.collect())  # once: some are read from the clock
        frozen = CollectorRegistry()
        frozen.register(Frozen(families))
        assert prometheus_lean.text(frozen) == generate_latest(frozen)
        assert len(families) > 10, [f.name for f in families]  # (the daemon's own, many)


class Frozen(Collector):
    """The same families at every collect."""

    def __init__(self, families: list) -> None:
        self.families = families

    def collect(self):
        return iter(self.families)
