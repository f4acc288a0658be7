"""Prometheus metrics of the HAProxy controller, on the daemon's own CollectorRegistry."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from smartstack.metric_families import Families

if TYPE_CHECKING:
    from synapse.haproxy.status import HAProxyStatus

APPLY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


# name -> help text (# HELP), in the order declared below
HELP = {
    "synapse_haproxy_plan_operations_total": (
        "Runtime API operations applied, by kind (add_server, set_maint, set_weight, ...)"
    ),
    "synapse_haproxy_reloads_total": (
        "HAProxy reloads (and starts) done, by the kind of their first reason"
    ),
    "synapse_haproxy_reload_failures_total": (
        "Reloads that did not bring up a new HAProxy (reload command or new worker failed)"
    ),
    "synapse_haproxy_validation_failures_total": (
        "Candidate configs refused by `haproxy -c` / check_command (never installed)"
    ),
    "synapse_haproxy_runtime_command_errors_total": (
        "Runtime API commands that failed or got no answer, by operation kind"
    ),
    "synapse_haproxy_map_file_write_errors_total": (
        "Map files (zones, routes) not rewritten after a runtime map change (full or "
        "read-only disk); HAProxy serves the change, the next apply writes again"
    ),
    "synapse_haproxy_config_writes_total": (
        "Times the HAProxy config file was rewritten (only when its content changed)"
    ),
    "synapse_haproxy_apply_duration_seconds": (
        "Time of one apply(): read state, plan, runtime operations, file write, reload"
    ),
    "synapse_haproxy_reload_pending": (
        "1 while a reload waits for its turn (restart_interval, a failed reload's retry); "
        "a refused config is synapse_haproxy_config_invalid"
    ),
    "synapse_haproxy_last_reload_timestamp_seconds": (
        "Unix time of the last successful reload or start"
    ),
    "synapse_haproxy_panics_total": (
        "Backends put in panic: every server DOWN, those whose check timed out put back"
    ),
    "synapse_haproxy_panic_servers": (
        "Servers a panic holds UP with their checks disabled (synapse.haproxy.panic)"
    ),
    "synapse_haproxy_healthy": (
        "1 while HAProxy runs the desired state, 0 while /health lists a problem of it"
    ),
    "synapse_haproxy_config_invalid": (
        "1 while the desired config cannot be applied (`haproxy -c` / check_command refuse it)"
    ),
}


class HAProxyMetrics:
    def __init__(
        self,
        registry: CollectorRegistry,
        problems: Callable[[], list[str]] | None = None,
        info: Callable[[], HAProxyStatus] | None = None,
    ) -> None:
        """``problems``, ``info``: the controller's ``health`` and status, read at scrape
        time for the state gauges (``_states``)."""
        self._applied: dict[str, Counter] = {}  # kind -> its child (``labels`` costs ~3 us)
        families = Families(registry, HELP)
        declare = families.declare
        self.plan_operations = declare(Counter, "synapse_haproxy_plan_operations_total", "kind")
        self.reloads = declare(Counter, "synapse_haproxy_reloads_total", "reason")
        self.reload_failures = declare(Counter, "synapse_haproxy_reload_failures_total")
        self.validation_failures = declare(Counter, "synapse_haproxy_validation_failures_total")
        self.runtime_errors = declare(
            Counter, "synapse_haproxy_runtime_command_errors_total", "kind"
        )
        self.map_file_errors = declare(
            Counter, "synapse_haproxy_map_file_write_errors_total", "map"
        )
        self.config_writes = declare(Counter, "synapse_haproxy_config_writes_total")
        self.apply_duration = declare(
            Histogram, "synapse_haproxy_apply_duration_seconds", buckets=APPLY_BUCKETS
        )
        self.reload_pending = declare(Gauge, "synapse_haproxy_reload_pending")
        self.last_reload = declare(Gauge, "synapse_haproxy_last_reload_timestamp_seconds")
        self.panics = declare(Counter, "synapse_haproxy_panics_total")
        self.panic_servers = declare(Gauge, "synapse_haproxy_panic_servers")
        if problems is not None and info is not None:
            self._states(families, problems, info)

    def _states(
        self,
        families: Families,
        problems: Callable[[], list[str]],
        info: Callable[[], HAProxyStatus],
    ) -> None:
        """Gauges that hold while a problem lasts, read at scrape time: the counters above
        go flat while a refused config stays refused (an alert on their increase cleared
        after its window with the problem still there)."""
        families.declare(Gauge, "synapse_haproxy_healthy").set_function(
            lambda: 0.0 if problems() else 1.0
        )
        families.declare(Gauge, "synapse_haproxy_config_invalid").set_function(
            lambda: float(info().validation_error is not None)
        )

    def applied(self, kind: str) -> None:
        """One runtime operation of ``kind`` applied (on every change's path: the labelled
        child is looked up once per kind)."""
        child = self._applied.get(kind)
        if child is None:
            child = self._applied[kind] = self.plan_operations.labels(kind)
        child.inc()
