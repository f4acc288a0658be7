"""nerve's /metrics forgets what no longer exists: every series of a removed service (its
checks' too), and the checks a reload took from a service that stays."""

from __future__ import annotations

from types import SimpleNamespace

from nerve.metrics import NerveMetrics


def fill(metrics: NerveMetrics, service: str, check: str) -> None:
    """A series in each per-service family, as a service that ran a while writes them."""
    metrics.check_up.labels(service, check).set(1)
    metrics.check_results.labels(service, check, "pass").inc()
    metrics.check_results.labels(service, check, "no_verdict").inc()
    metrics.check_duration.labels(service, check).observe(0.002)
    metrics.healthy.labels(service).set(1)
    metrics.registered.labels(service).set(1)
    metrics.maintenance.labels(service).set(0)
    metrics.transitions.labels(service, "registered").inc()
    metrics.throttled.labels(service, "false").inc()
    metrics.registry_writes.labels(service, "zookeeper", "register").inc()
    metrics.registry_errors.labels(service, "zookeeper").inc()


def series(metrics: NerveMetrics, **labels: str) -> list[tuple[str, dict[str, str]]]:
    """The samples /metrics shows whose labels include ``labels``."""
    return [
        (sample.name, sample.labels)
        for family in metrics.registry.collect()
        for sample in family.samples
        if labels.items() <= sample.labels.items()
    ]


def test_a_forgotten_service_leaves_no_series_and_the_others_keep_theirs() -> None:
    """Before: only the healthy/registered/maintenance gauges went; `nerve_check_up 1.0`
    of a check that no longer existed stayed for the life of the process."""
    metrics = NerveMetrics()
    fill(metrics, "web@web-7f9c:8080", "tcp-172.17.0.5:8080")
    fill(metrics, "api", "tcp-172.17.0.5:8080")
    kept = series(metrics, service="api")
    assert len(series(metrics, service="web@web-7f9c:8080")) == len(kept) > 20
    metrics.forget_service("web@web-7f9c:8080")
    assert series(metrics, service="web@web-7f9c:8080") == []
    assert series(metrics, service="api") == kept


def test_a_reload_forgets_the_checks_a_service_no_longer_has() -> None:
    metrics = NerveMetrics()
    fill(metrics, "web", "tcp-10.0.0.5:8080")
    fill(metrics, "web", "http-10.0.0.5:8080")
    fill(metrics, "api", "tcp-10.0.0.5:8080")
    kept = series(metrics, service="web", check="http-10.0.0.5:8080")
    api = series(metrics, service="api")
    metrics.forget_checks("web", keep={"http-10.0.0.5:8080"})
    assert series(metrics, service="web", check="tcp-10.0.0.5:8080") == []
    assert series(metrics, service="web", check="http-10.0.0.5:8080") == kept
    assert series(metrics, service="api") == api
    assert series(metrics, service="web", to="registered") != []  # the service stays


def test_forget_stale_forgets_the_service_unless_one_runs_under_its_name() -> None:
    metrics = NerveMetrics()
    fill(metrics, "web", "tcp-a")
    fill(metrics, "web", "tcp-b")
    metrics.forget_stale("web", SimpleNamespace(checks=[SimpleNamespace(name="tcp-b")]))
    assert series(metrics, check="tcp-a") == [] and series(metrics, check="tcp-b") != []
    metrics.forget_stale("web", None)
    assert series(metrics, service="web") == []
