"""Health checks, one module per type; ``build_checks`` turns config blocks into checks."""

from __future__ import annotations

import aiohttp

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
    "Passed",
    "build_check",
    "build_checks",
    "default_name",
]


def default_name(cfg: CheckConfig, host: str, port: int) -> str:
    """Airbnb names a check '<type>-<host>:<port>' unless the config names it."""
    return cfg.name or f"{cfg.type}-{host}:{port}"


def build_check(
    cfg: CheckConfig, service: ServiceConfig, http_session: aiohttp.ClientSession, name: str
) -> BaseCheck:
    """One check; ``host``/``port`` default to the service's own."""
    host = cfg.host or service.host
    port = cfg.port or service.port
    if cfg.type in ("http", "https"):
        assert cfg.uri is not None  # the config model requires it
        return HttpCheck(
            name,
            http_session,
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


def build_checks(service: ServiceConfig, http_session: aiohttp.ClientSession) -> list[BaseCheck]:
    """Every check of a service, with names unique within it (they label metrics)."""
    checks: list[BaseCheck] = []
    seen: set[str] = set()
    for cfg in service.checks:
        name = default_name(cfg, cfg.host or service.host, cfg.port or service.port)
        unique, n = name, 2
        while unique in seen:
            unique, n = f"{name}#{n}", n + 1
        seen.add(unique)
        checks.append(build_check(cfg, service, http_session, unique))
    return checks
