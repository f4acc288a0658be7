"""nerve's Prometheus metrics, on a per-daemon registry (tests run many daemons per process)."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

from smartstack.build_info import instrument
from smartstack.metric_families import Families
from smartstack.statsd import NULL_STATS, Stats

CHECK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


# name -> help text (# HELP), in the order declared below
HELP = {
    "nerve_check_up": "Last result of a check (1 pass, 0 fail)",
    "nerve_check_results": "Check results",
    "nerve_check_duration_seconds": "Check latency",
    "nerve_service_healthy": "1 when every check of the service is up",
    "nerve_service_registered": "1 while the registration exists in the registry",
    "nerve_service_maintenance": "1 while the service is in maintenance",
    "nerve_transitions": "Registration decisions (to=registered|withdrawn)",
    "nerve_throttled": "Status changes hit by rate_limiting (shadow=true: only logged)",
    "nerve_registry_writes": "Successful registry writes (op=register|withdraw)",
    "nerve_registry_errors": "Failed registry write attempts (each is retried)",
    "nerve_registration_vanished": (
        "Registrations deleted by someone else while nerve's session or lease lived on"
        " (each written again)"
    ),
    "nerve_registry_reconnects": (
        "New ZooKeeper sessions / new etcd leases after a loss, and reconnections"
    ),
    "nerve_config_reloads": "SIGHUP reloads (result=ok|rejected|not_checked)",
    "nerve_heartbeat_timestamp_seconds": "Last main-loop heartbeat (unix time)",
    "nerve_config_last_good": (
        "1 while nerve runs its last good config because the file is invalid (a start)"
    ),
}


class NerveMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        # statsd twin of the figures below (a no-op unless the config has a statsd block)
        self.statsd: Stats = NULL_STATS
        instrument(self.registry, "nerve")
        declare = Families(self.registry, HELP).declare
        self.check_up = declare(Gauge, "nerve_check_up", "service", "check")
        self.check_results = declare(Counter, "nerve_check_results", "service", "check", "result")
        self.check_duration = declare(
            Histogram, "nerve_check_duration_seconds", "service", "check", buckets=CHECK_BUCKETS
        )
        self.healthy = declare(Gauge, "nerve_service_healthy", "service")
        self.registered = declare(Gauge, "nerve_service_registered", "service")
        self.maintenance = declare(Gauge, "nerve_service_maintenance", "service")
        self.transitions = declare(Counter, "nerve_transitions", "service", "to")
        self.throttled = declare(Counter, "nerve_throttled", "service", "shadow")
        self.registry_writes = declare(
            Counter, "nerve_registry_writes", "service", "registry", "op"
        )
        self.registry_errors = declare(Counter, "nerve_registry_errors", "service", "registry")
        self.registration_vanished = declare(
            Counter, "nerve_registration_vanished", "service", "registry"
        )
        self.reconnects = declare(Counter, "nerve_registry_reconnects", "registry", "event")
        self.reloads = declare(Counter, "nerve_config_reloads", "result")
        self.heartbeat = declare(Gauge, "nerve_heartbeat_timestamp_seconds")
        self.config_last_good = declare(Gauge, "nerve_config_last_good")

    def forget_service(self, service: str) -> None:
        """Drop every series of a removed service, its checks' too: /metrics must not show
        it (or a check up) for ever. (Before, only three gauges went: 150 services replaced
        one by one by SIGHUP took /metrics from 32 to 2,432 series.)"""
        for family in self._per_service():
            _remove_children(family, lambda labels: labels["service"] == service)

    def forget_checks(self, service: str, keep: Collection[str]) -> None:
        """Drop the series of ``service``'s checks whose names are not in ``keep`` (a reload
        renamed, moved or removed them)."""
        for family in (self.check_up, self.check_results, self.check_duration):
            _remove_children(
                family, lambda labels: labels["service"] == service and labels["check"] not in keep
            )

    def forget_stale(self, service: str, running: Running | None) -> None:
        """Once a service's old run stopped for good (withdrawn, or handed over): all of its
        series when nothing ``running`` goes on under its name, else those of the checks
        the running one does not have. Earlier, the old run could still write them again."""
        if running is None:
            self.forget_service(service)
        else:
            self.forget_checks(service, {check.name for check in running.checks})

    def _per_service(self) -> list[MetricWrapperBase]:
        return [
            family
            for family in vars(self).values()
            if isinstance(family, MetricWrapperBase) and "service" in family._labelnames
        ]


class _Named(Protocol):
    name: str


class Running(Protocol):
    """What ``forget_stale`` needs of a service: its checks' names."""

    @property
    def checks(self) -> Sequence[_Named]: ...


def _remove_children(family: MetricWrapperBase, match: Callable[[dict[str, str]], bool]) -> None:
    """Remove every child of ``family`` whose labels ``match``. prometheus_client lists a
    family's children nowhere public (remove_by_labels, newer than the 0.20 we require,
    matches equal values only)."""
    names = family._labelnames
    for values in list(family._metrics):  # (a copy: remove() changes it)
        if match(dict(zip(names, values, strict=True))):
            family.remove(*values)
