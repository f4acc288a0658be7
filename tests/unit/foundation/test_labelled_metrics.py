"""smartstack.labelled_metrics: the same exposition as prometheus_client's own families,
for a fraction of the memory per label set."""

from __future__ import annotations

import re
import tracemalloc

import prometheus_client
import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from smartstack.labelled_metrics import LabelledCounter, LabelledGauge


def exposition(registry: CollectorRegistry) -> str:
    # `_created` samples carry the creation time: equal up to that value
    text = generate_latest(registry).decode()
    return re.sub(r"(_created\{[^}]*\}) \S+", r"\1 T", text)


def fill(counter, gauge) -> None:
    counter.labels("web", "etcd").inc()
    counter.labels("web", "etcd").inc(2)
    counter.labels("api", "zookeeper").inc(0)
    gauge.labels("web").set(3)
    gauge.labels("api").set(1)
    gauge.labels("api").set(0)


def test_the_exposition_is_prometheus_clients():
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    fill(
        LabelledCounter("x_events_total", "Events.", ["service", "method"], registry=ours),
        LabelledGauge("x_up", "Up.", ["service"], registry=ours),
    )
    fill(
        Counter("x_events_total", "Events.", ["service", "method"], registry=theirs),
        Gauge("x_up", "Up.", ["service"], registry=theirs),
    )
    assert exposition(ours) == exposition(theirs)
    labels = {"service": "web", "method": "etcd"}
    assert ours.get_sample_value("x_events_total", labels) == 3
    assert ours.get_sample_value("x_up", {"service": "api"}) == 0


def test_misuse_is_refused_as_prometheus_client_does():
    registry = CollectorRegistry()
    counter = LabelledCounter("y_total", "Y.", ["service"], registry=registry)
    with pytest.raises(ValueError):
        counter.labels("a").inc(-1)
    with pytest.raises(ValueError):
        counter.labels("a", "b")
    with pytest.raises(AttributeError):
        counter.labels("a").set(2)
    with pytest.raises(ValueError):  # the registry refuses a second family of the same name
        LabelledCounter("y_total", "Y again.", ["service"], registry=registry)


def test_a_label_set_costs_a_fraction_of_prometheus_clients():
    def cost(family) -> float:
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for i in range(200):
                family.labels(f"svc{i}").inc()
            return (tracemalloc.get_traced_memory()[0] - before) / 200
        finally:
            tracemalloc.stop()

    ours = cost(LabelledCounter("z_total", "Z.", ["service"], registry=CollectorRegistry()))
    theirs = cost(Counter("z_total", "Z.", ["service"], registry=CollectorRegistry()))
    assert ours < theirs / 2.5, (ours, theirs)  # (~140 vs ~560 bytes, with the label)


def test_created_series_are_off_when_prometheus_client_has_them_off():
    prometheus_client.disable_created_metrics()
    try:
        registry = CollectorRegistry()
        LabelledCounter("w_total", "W.", ["service"], registry=registry).labels("a").inc()
        text = generate_latest(registry).decode()
    finally:
        prometheus_client.enable_created_metrics()
    assert 'w_total{service="a"} 1.0' in text and "_created" not in text


def test_forget_drops_every_label_set_of_the_value():
    registry = CollectorRegistry()
    counter = LabelledCounter("x_events_total", "Events.", ["service", "method"], registry=registry)
    gauge = LabelledGauge("x_up", "Up.", ["service"], registry=registry)
    fill(counter, gauge)
    assert counter.forget("web") == 1 and gauge.forget("web") == 1
    assert gauge.forget("web") == 0 and gauge.forget("web", label="nosuch") == 0
    assert registry.get_sample_value("x_up", {"service": "web"}) is None
    assert registry.get_sample_value("x_events_total", {"service": "web", "method": "etcd"}) is None
    assert registry.get_sample_value("x_up", {"service": "api"}) == 0
    counter.labels("web", "etcd").inc()  # counted again: starts from zero
    assert registry.get_sample_value("x_events_total", {"service": "web", "method": "etcd"}) == 1


def test_a_service_that_left_the_config_reports_nothing():
    from synapse.metrics import SynapseMetrics

    registry = CollectorRegistry()
    metrics = SynapseMetrics(registry)
    for service in ("web", "api"):
        metrics.watcher_connected.labels(service).set(1)
        metrics.watch_events.labels(service, "zookeeper").inc()
        metrics.zone_backends_refused.labels(service, "cap").inc()
    metrics.forget_service("web")
    sample = registry.get_sample_value
    assert sample("synapse_watcher_connected", {"service": "web"}) is None
    assert sample("synapse_watch_events_total", {"service": "web", "method": "zookeeper"}) is None
    refused = {"service": "web", "reason": "cap"}
    assert sample("synapse_zone_backends_refused_total", refused) is None
    assert sample("synapse_watcher_connected", {"service": "api"}) == 1
