"""Prometheus metrics of synapse's discovery side (the HAProxy controller adds its own).

Always registered on a per-daemon ``CollectorRegistry``: tests run many daemons
in one process and the global registry would refuse duplicates. The per-service figures
are ``smartstack.labelled_metrics`` families: prometheus_client's children cost ~700 bytes
each, 3.4 MB for five of them at 1,000 services.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from smartstack.build_info import instrument
from smartstack.labelled_metrics import LabelledCounter, LabelledGauge
from smartstack.metric_families import Families
from smartstack.statsd import NULL_STATS, Stats
from synapse.contract import ApplyOutcome, ApplyResult

# From a watch event to HAProxy running the result: milliseconds normally, seconds when a
# reload is rate limited.
# From 0.5 ms: a change's own path is about a millisecond (issue 15's goal: p50 <= 1 ms).
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
                   10, 30, 60)  # fmt: skip


# name -> help text (# HELP), in the order declared below
HELP = {
    "synapse_watch_events_total": (
        "Registry events seen by watchers (watch fired, key changed, poll answered)"
    ),
    "synapse_bad_records_total": (
        "Registry records refused as invalid or hostile (each distinct record once)"
    ),
    "synapse_ignored_record_fields_total": (
        "Record fields ignored while the server was kept (e.g. non-string server options)"
    ),
    "synapse_skipped_records": (
        "Invalid records currently present in the service's registry namespace"
    ),
    "synapse_registry_reads_total": (
        "Record reads from the registry (ZooKeeper GETs, etcd range reads)"
    ),
    "synapse_watcher_connected": (
        "1 while the service's watcher has a live registry connection and watch"
    ),
    "synapse_docker_engine_connected": (
        "1 while the service's docker watcher follows that engine's events"
    ),
    "synapse_servers": "Servers synapse wants in the service's backend",
    "synapse_applies_total": "Desired-state hand-overs to the HAProxy controller, by result",
    "synapse_watch_to_applied_seconds": (
        "Time from a registry watch event to HAProxy running the change"
    ),
    "synapse_config_reloads_total": "SIGHUP config reloads, by result",
    "synapse_zone_backends_refused_total": (
        "Zones seen in the records that got no zone backend of their own (their servers "
        "are served by the service's backend), by reason: name_clash, not_listed, cap"
    ),
    "synapse_file_output_writes_total": "Service files written by file_output",
    "synapse_state_file_write_failing_seconds": (
        "Seconds since the state file's writes began to fail (full or read-only disk; "
        "retried each second), 0 while its last write succeeded"
    ),
    "synapse_config_last_good": (
        "1 while synapse runs its last good config because the file is invalid (a start)"
    ),
}


class SynapseMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        instrument(registry, "synapse")
        # statsd twin of the figures below (a no-op unless the config has a statsd block)
        self.statsd: Stats = NULL_STATS
        declare = Families(registry, HELP).declare
        self.watch_events = declare(
            LabelledCounter, "synapse_watch_events_total", "service", "method"
        )
        self.bad_records = declare(
            LabelledCounter, "synapse_bad_records_total", "service", "method"
        )
        self.ignored_record_fields = declare(
            LabelledCounter, "synapse_ignored_record_fields_total", "service", "method"
        )
        self.skipped_records = declare(LabelledGauge, "synapse_skipped_records", "service")
        self.registry_reads = declare(
            LabelledCounter, "synapse_registry_reads_total", "service", "method"
        )
        self.watcher_connected = declare(LabelledGauge, "synapse_watcher_connected", "service")
        self.docker_engine_connected = declare(
            LabelledGauge, "synapse_docker_engine_connected", "service", "engine"
        )
        self.servers = declare(LabelledGauge, "synapse_servers", "service")
        self.applies = declare(Counter, "synapse_applies_total", "result")
        self.apply_latency = declare(
            Histogram, "synapse_watch_to_applied_seconds", buckets=LATENCY_BUCKETS
        )
        self.config_reloads = declare(Counter, "synapse_config_reloads_total", "result")
        self.zone_backends_refused = declare(
            LabelledCounter, "synapse_zone_backends_refused_total", "service", "reason"
        )
        self.file_writes = declare(Counter, "synapse_file_output_writes_total")
        # The state file's failing writes (a full disk), read at scrape time: the file kept
        # now (a SIGHUP may replace it) is looked up by ``RoundOutputs``, which sets this.
        self.state_file_failing_for: Callable[[], float] = lambda: 0.0
        declare(Gauge, "synapse_state_file_write_failing_seconds").set_function(
            lambda: self.state_file_failing_for()
        )
        # 1 while the invalid file's last good copy runs (synapse.last_good): ``watch_last_good``
        self.config_last_good: Callable[[], float] = lambda: 0.0
        declare(Gauge, "synapse_config_last_good").set_function(lambda: self.config_last_good())

    def forget_service(self, service: str) -> None:
        """A service left the config: its label sets go (a stale ``synapse_watcher_connected``
        or ``synapse_servers`` would report a service nothing watches any more)."""
        for family in vars(self).values():
            if isinstance(family, LabelledCounter | LabelledGauge):
                family.forget(service)

    def send_apply_stats(self, result: ApplyResult, seconds: float) -> None:
        """statsd: one reconciliation, its duration, the reload and runtime updates it did."""
        self.statsd.incr("synapse", "reconcile")
        self.statsd.timing("synapse", "reconcile", "duration", seconds=seconds)
        if result.reload not in (ApplyOutcome.NONE, ApplyOutcome.DISABLED):
            self.statsd.incr("synapse", "haproxy", "reload", result.reload.value)
        if result.ops:
            self.statsd.incr("synapse", "haproxy", "runtime_update", count=len(result.ops))
