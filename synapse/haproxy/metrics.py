"""Prometheus metrics of the HAProxy controller, on the daemon's own CollectorRegistry."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

if TYPE_CHECKING:
    from synapse.haproxy.status import HAProxyStatus

APPLY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


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
        self.plan_operations = Counter(
            "synapse_haproxy_plan_operations_total",
            "Runtime API operations applied, by kind (add_server, set_maint, set_weight, ...)",
            ["kind"],
            registry=registry,
        )
        self.reloads = Counter(
            "synapse_haproxy_reloads_total",
            "HAProxy reloads (and starts) done, by the kind of their first reason",
            ["reason"],
            registry=registry,
        )
        self.reload_failures = Counter(
            "synapse_haproxy_reload_failures_total",
            "Reloads that did not bring up a new HAProxy (reload command or new worker failed)",
            registry=registry,
        )
        self.validation_failures = Counter(
            "synapse_haproxy_validation_failures_total",
            "Candidate configs refused by `haproxy -c` / check_command (never installed)",
            registry=registry,
        )
        self.runtime_errors = Counter(
            "synapse_haproxy_runtime_command_errors_total",
            "Runtime API commands that failed or got no answer, by operation kind",
            ["kind"],
            registry=registry,
        )
        self.map_file_errors = Counter(
            "synapse_haproxy_map_file_write_errors_total",
            "Map files (zones, routes) not rewritten after a runtime map change (full or "
            "read-only disk); HAProxy serves the change, the next apply writes again",
            ["map"],
            registry=registry,
        )
        self.config_writes = Counter(
            "synapse_haproxy_config_writes_total",
            "Times the HAProxy config file was rewritten (only when its content changed)",
            registry=registry,
        )
        self.apply_duration = Histogram(
            "synapse_haproxy_apply_duration_seconds",
            "Time of one apply(): read state, plan, runtime operations, file write, reload",
            buckets=APPLY_BUCKETS,
            registry=registry,
        )
        self.reload_pending = Gauge(
            "synapse_haproxy_reload_pending",
            "1 while a reload waits for its turn (restart_interval, a failed reload's retry); "
            "a refused config is synapse_haproxy_config_invalid",
            registry=registry,
        )
        self.last_reload = Gauge(
            "synapse_haproxy_last_reload_timestamp_seconds",
            "Unix time of the last successful reload or start",
            registry=registry,
        )
        self.panics = Counter(
            "synapse_haproxy_panics_total",
            "Backends put in panic: every server DOWN, those whose check timed out put back",
            registry=registry,
        )
        self.panic_servers = Gauge(
            "synapse_haproxy_panic_servers",
            "Servers a panic holds UP with their checks disabled (synapse.haproxy.panic)",
            registry=registry,
        )

        if problems is not None and info is not None:
            self._states(registry, problems, info)

    def _states(
        self,
        registry: CollectorRegistry,
        problems: Callable[[], list[str]],
        info: Callable[[], HAProxyStatus],
    ) -> None:
        """Gauges that hold while a problem lasts, read at scrape time: the counters above
        go flat while a refused config stays refused (an alert on their increase cleared
        after its window with the problem still there)."""
        healthy = Gauge(
            "synapse_haproxy_healthy",
            "1 while HAProxy runs the desired state, 0 while /health lists a problem of it",
            registry=registry,
        )
        healthy.set_function(lambda: 0.0 if problems() else 1.0)
        invalid = Gauge(
            "synapse_haproxy_config_invalid",
            "1 while the desired config cannot be applied (`haproxy -c` / check_command refuse it)",
            registry=registry,
        )
        invalid.set_function(lambda: float(info().validation_error is not None))

    def applied(self, kind: str) -> None:
        """One runtime operation of ``kind`` applied (on every change's path: the labelled
        child is looked up once per kind)."""
        child = self._applied.get(kind)
        if child is None:
            child = self._applied[kind] = self.plan_operations.labels(kind)
        child.inc()
