"""From a service's config block to a ready ``Service`` (checks + state + reporter)."""

from __future__ import annotations

from nerve.checks import NoopCheck, build_checks
from nerve.config import ServiceConfig
from nerve.maintenance import MaintenanceStore
from nerve.metrics import NerveMetrics
from nerve.registries import Registries, registration_for
from nerve.reporters.base import Reporter
from nerve.service import Service


def build_service(
    name: str,
    cfg: ServiceConfig,
    *,
    instance_id: str,
    registries: Registries,
    metrics: NerveMetrics,
    store: MaintenanceStore,
    reporter: Reporter | None = None,
    initially_up: bool = False,
) -> Service:
    """``reporter`` reuses an existing registration (a reload that changed only checks)."""
    if reporter is None:
        registration = registration_for(instance_id, cfg)
        reporter = registries.reporter(name, cfg, instance_id, registration)
    rate = cfg.rate_limiting
    if cfg.check_mocked:  # Airbnb's check_mocked: the checks are not run, the service is up
        checks, thresholds = [NoopCheck("check_mocked", 0.1)], [(1, 1)]
    else:
        checks, thresholds = build_checks(cfg), [(c.rise, c.fall) for c in cfg.checks]
    return Service(
        name,
        checks,
        thresholds,
        reporter,
        check_interval=cfg.check_interval,
        metrics=metrics,
        rate_limit=rate.limits() if rate else None,
        maintenance=store,
        maintenance_file=cfg.maintenance_file,
        initially_up=initially_up,
    )
