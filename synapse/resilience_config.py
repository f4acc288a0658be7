"""ours: how a managed-mode backend survives a dead server (retries, observe, HAProxy's own
health checks); rendered by synapse/haproxy/resilience.py."""

from __future__ import annotations

import re
from typing import Literal

from smartstack.modelbase import ConfigModel, Field, field_validator

# HAProxy `retry-on` conditions synapse accepts (HAProxy 2.6). Status codes are left out on
# purpose: a 503 from a draining server would be sent on to the next one.
RetryCondition = Literal[
    "conn-failure", "empty-response", "junk-response", "response-timeout", "0rtt-rejected"
]


class RetriesConfig(ConfigModel):
    """ours: how HAProxy retries a request whose server failed (``retries``, ``retry-on``,
    ``option redispatch``). On by default in managed mode; see docs/synapse-haproxy.md."""

    count: int = Field(default=3, ge=0, le=100)  # `retries`
    # `retry-on`, HTTP services only; TCP retries connection failures alone. Not
    # `response-timeout` by default: it sends a slow GET (a long-poll, a report) to
    # count + 1 servers in turn and the client waits (count + 1) x `timeout server`
    # (3 s, a 5-s GET: 504 after 12.0 s, run on 4 servers; review s27), a retry storm
    # when the servers are slow from overload. A crash is conn-failure/empty-response.
    retry_on: list[RetryCondition] = Field(
        default_factory=lambda: ["conn-failure", "empty-response"]
    )
    redispatch: bool = True  # `option redispatch 1`: every retry goes to another server
    # Requests of other methods are retried only when the connection failed (nothing sent).
    methods: list[str] = Field(default_factory=lambda: ["GET", "HEAD", "OPTIONS"])

    @field_validator("methods")
    @classmethod
    def _tokens(cls, value: list[str]) -> list[str]:
        for method in value:
            if not re.fullmatch(r"[A-Z]{1,20}", method):
                raise ValueError(f"method {method!r} is not an HTTP method (GET, HEAD, ...)")
        return value


class ObserveConfig(ConfigModel):
    """ours: HAProxy marks a server down from live traffic errors (``observe``, ``on-error``,
    ``error-limit``) before nerve's checks catch up. Off unless set; implies health checks."""

    layer: Literal["layer4", "layer7"] = "layer7"
    error_limit: int = Field(default=10, ge=1)
    on_error: Literal["fastinter", "fail-check", "sudden-death", "mark-down"] = "mark-down"


# Zone routing in managed mode: HAProxy fails over to the other zones (backups) when no
# local server is up; a connection refused marks a server down at once, checks bring it back.
ZONE_OBSERVE = ObserveConfig(layer="layer4", error_limit=1, on_error="mark-down")
# Its checks: seldom while a server is up (every synapse of a fleet checks every server:
# 1,000 hosts at 10 s are 100 checks/s per server), every second while it is down or
# coming back (HAProxy uses fastinter from the first good check until `rise`).
ZONE_INTER = "inter 10000 fastinter 1000 downinter 1000"
# The docker watcher's default checks: every `inter_ms` while a server is up, every 0.5 s
# while it is down or changing. A dockerd restart takes every published port down at once
# (docker-proxy dies with dockerd, live-restore or not): the checks mark them all DOWN and,
# at `inter` alone, kept them out (503) up to rise x inter after the ports were back (review
# s40: 2.1 s, ~85 requests at 40/s). Checks of an up server stay as they were.
DOCKER_CHECK_TIMES = "fastinter 500 downinter 500"


class HealthCheckConfig(ConfigModel):
    """ours: HAProxy's own health checks on the servers (``check inter ... rise ... fall``).
    Default: on for the docker watcher's servers in managed mode (no nerve checks them)."""

    enabled: bool | None = None  # None: the default above
    inter_ms: int = Field(default=2000, ge=100)
    rise: int = Field(default=2, ge=1)
    fall: int = Field(default=2, ge=1)
    path: str | None = None  # HTTP services: `GET path`; else (or TCP) a connect check
    # Managed mode: when HAProxy has no usable server left, those whose check timed out
    # (slow, not dead) are put back for panic_hold_ms (synapse.haproxy.panic)
    panic: bool = True
    panic_hold_ms: int = Field(default=10000, ge=1000, le=600000)

    @field_validator("path")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"/[\x21-\x7e]*", value):
            raise ValueError(f"path {value!r} must start with '/' and have no spaces")
        return value
