"""Health checks, one module per type; ``build_checks`` turns config blocks into checks."""

from __future__ import annotations

from nerve.checks.base import BaseCheck, Check, CheckFailed, CheckResult, Passed
from nerve.checks.exec import ExecCheck
from nerve.checks.http import HttpCheck
from nerve.checks.noop import NoopCheck
from nerve.checks.rabbitmq import RabbitMqCheck
from nerve.checks.redis import RedisCheck
from nerve.checks.tcp import TcpCheck
from nerve.config import CheckConfig, ServiceConfig

__all__ = [
    "BaseCheck",
    "Check",
    "CheckFailed",
    "CheckResult",
    "NoopCheck",
    "Passed",
    "build_check",
    "build_checks",
    "default_name",
    "resolved",
]


def default_name(cfg: CheckConfig, host: str, port: int) -> str:
    """Airbnb names a check '<type>-<host>:<port>' unless the config names it."""
    return cfg.name or f"{cfg.type}-{host}:{port}"


def resolved(cfg: CheckConfig, service: ServiceConfig) -> CheckConfig:
    """The check with its ``host``/``port`` defaults (the service's own) filled in."""
    return cfg.model_copy(
        update={"host": cfg.host or service.host, "port": cfg.port or service.port}
    )


def build_check(cfg: CheckConfig, service: ServiceConfig, name: str) -> BaseCheck:
    """One check; ``host``/``port`` default to the service's own."""
    cfg = resolved(cfg, service)
    host, port = cfg.host, cfg.port
    assert host is not None and port is not None
    if cfg.type in ("http", "https"):
        assert cfg.uri is not None  # the config model requires it
        return HttpCheck(
            name,
            host,
            port,
            cfg.uri,
            cfg.timeout,
            ssl=cfg.ssl or cfg.type == "https",
            headers=cfg.headers,
            expect=cfg.expect,
            open_timeout=cfg.open_timeout,
        )
    if cfg.type == "tcp":
        return TcpCheck(name, host, port, cfg.timeout)
    if cfg.type == "redis":
        return RedisCheck(name, host, port, cfg.timeout, cfg.password)
    if cfg.type == "rabbitmq":
        return RabbitMqCheck(name, host, port, cfg.timeout)
    if cfg.type == "exec":
        assert cfg.command is not None  # the config model requires it
        return ExecCheck(name, cfg.command, cfg.timeout)
    return NoopCheck(name, cfg.timeout)


def build_checks(service: ServiceConfig) -> list[BaseCheck]:
    """Every check of a service, with names unique within it (they label metrics)."""
    checks: list[BaseCheck] = []
    seen: set[str] = set()
    for cfg in service.checks:
        name = default_name(cfg, cfg.host or service.host, cfg.port or service.port)
        unique, n = name, 2
        while unique in seen:
            unique, n = f"{name}#{n}", n + 1
        seen.add(unique)
        checks.append(build_check(cfg, service, unique))
    return checks
