"""A service's /status, one check's row of it (its counters, its last verdict, its output),
and its result counted in the metrics."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nerve.maintenance import UNKNOWN

if TYPE_CHECKING:
    from nerve.checks.base import Check, CheckResult
    from nerve.metrics import NerveMetrics
    from nerve.service import Service


def check_status(service: Service, check: Check) -> dict[str, Any]:
    tracker = service.state.trackers[check.name]
    result = service.last_results.get(check.name)
    out: dict[str, Any] = {
        "name": check.name,
        "type": check.type,
        "up": tracker.up,
        "rise": tracker.rise,
        "fall": tracker.fall,
        "streak": tracker.streak,
        "timeout": check.timeout,
    }
    if result is not None:
        out["last"] = {
            "ok": result.ok,
            "detail": result.detail,
            "latency": round(result.latency, 6),
            "at": result.at,
        }
        if result.output is not None:
            out["output"] = result.output
    if check.name in service.no_verdict:
        missed, skipped = service.no_verdict[check.name]
        out["no_verdict"] = {"in_a_row": missed, "detail": skipped.detail, "at": skipped.at}
    return out


def record_check(
    metrics: NerveMetrics | None, service: str, check: Check, result: CheckResult
) -> None:
    """One check's result in Prometheus' metrics and statsd."""
    if metrics is None:
        return
    metrics.check_up.labels(service, check.name).set(1 if result.ok else 0)
    outcome = "pass" if result.ok else "fail"
    metrics.check_results.labels(service, check.name, outcome).inc()
    metrics.check_duration.labels(service, check.name).observe(result.latency)
    stats = metrics.statsd
    stats.incr("nerve", "check", service, check.name, "success" if result.ok else "failure")
    stats.timing("nerve", "check", service, check.name, "duration", seconds=result.latency)


def record_no_verdict(metrics: NerveMetrics | None, service: str, check: Check) -> None:
    """A round in which nerve could not probe (its own limits), counted."""
    if metrics is not None:
        metrics.check_results.labels(service, check.name, "no_verdict").inc()
        metrics.statsd.incr("nerve", "check", service, check.name, "no_verdict")


def service_status(service: Service) -> dict[str, Any]:
    """A service's /status."""
    flag = service.store.load(service.name)
    if flag is UNKNOWN:
        flag = None  # (not read now: nothing changes for it)
    reason = service.state.reason()
    if service._flag_unknown and not service.state.registered:
        reason = f"not registered before its maintenance flag can be read; {reason}"
    return {
        "healthy": service.state.healthy,
        "wanted": service.state.wanted,
        "registered": service.registered,
        "reason": reason,
        "maintenance": flag.shown() if flag else None,
        "maintenance_sources": dict(service.state.maintenance),
        "check_interval": service.check_interval,
        "rounds": service.rounds,
        "record": service.reporter.registration.to_dict(),
        "registry": service.reporter.where(),
        "checks": [check_status(service, c) for c in service.checks],
        "not_registering": service.never_up.told,
        "moving_from": moving_from(service),
    }


def moving_from(service: Service) -> str | None:
    """``host:port`` of the old registration an address move keeps while the new address
    rises (nerve/handover.py), or None."""
    old = service.predecessor
    if old is None or not old.moved or old.gone.is_set() or not old.reporter.registered:
        return None
    was = old.reporter.registration
    return f"{was.host}:{was.port}"
