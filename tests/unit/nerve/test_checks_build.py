"""Checks that need no listener: noop, and build_checks naming and defaults."""

from __future__ import annotations

from nerve.checks import build_checks
from nerve.checks.http import HttpCheck
from nerve.checks.noop import NoopCheck
from nerve.config import ServiceConfig


async def test_noop_is_always_up() -> None:
    assert (await NoopCheck("n", 0.1).run()).ok


async def test_build_checks_defaults_to_the_service_address_and_names_uniquely() -> None:
    cfg = ServiceConfig.model_validate(
        {
            "host": "127.0.0.1",
            "port": 8080,
            "zk_hosts": ["127.0.0.1:2181"],
            "zk_path": "/x",
            "checks": [
                {"type": "tcp"},
                {"type": "tcp"},
                {"type": "https", "uri": "health", "port": 8443},
                {"type": "exec", "command": "true", "name": "script"},
            ],
        }
    )
    checks = build_checks(cfg)
    assert [c.name for c in checks] == [
        "tcp-127.0.0.1:8080",
        "tcp-127.0.0.1:8080#2",
        "https-127.0.0.1:8443",
        "script",
    ]
    https = checks[2]
    assert isinstance(https, HttpCheck) and https.url == "https://127.0.0.1:8443/health"
