"""synapse's edge keys (ours, issue 13): routes, access logs, TLS. docs/edge.md.

Kept apart from synapse.config, which uses them, so that module stays Airbnb's schema.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Literal

from smartstack.modelbase import ConfigModel, Field, field_validator
from synapse.haproxy.routes import check_host, check_path

if TYPE_CHECKING:
    from pydantic import ValidationInfo

HAPROXY_TIME = re.compile(r"\d+(us|ms|s|m|h|d)?")
SYSLOG_FACILITIES = (
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron",
    "auth2", "ftp", "ntp", "audit", "alert", "cron2",
    "local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7",
)  # fmt: skip


class ServiceRoutes(ConfigModel):
    """ours (edge): the hosts and path prefixes the shared frontend sends to this service."""

    hosts: list[str] = Field(default_factory=list)
    paths: list[str] = Field(default_factory=list)

    @field_validator("hosts", "paths")
    @classmethod
    def _entries(cls, value: list[str], info: ValidationInfo) -> list[str]:
        check = check_host if info.field_name == "hosts" else check_path
        for entry in value:
            check(entry)
        return value

    def __bool__(self) -> bool:
        return bool(self.hosts or self.paths)


class HAProxyLogging(ConfigModel):
    """ours (edge): access logs of every generated frontend, to syslog."""

    address: str  # "host:port" (UDP) or a unix socket path ("/dev/log")
    facility: str = "local0"
    format: Literal["httplog", "tcplog", "json"] = "httplog"

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        if value.startswith("/"):
            return value
        host, sep, port = value.rpartition(":")
        if not (sep and host and port.isdigit() and 1 <= int(port) <= 65535):
            raise ValueError(
                f"expected 'host:port' (syslog over UDP) or an absolute unix socket path "
                f"(got {value!r}); 'stdout' is not offered: see docs/edge.md"
            )
        return value

    @field_validator("facility")
    @classmethod
    def _facility(cls, value: str) -> str:
        if value not in SYSLOG_FACILITIES:
            raise ValueError(f"expected one of {', '.join(SYSLOG_FACILITIES)} (got {value!r})")
        return value


class HAProxyTLS(ConfigModel):
    """ours (edge): TLS termination on the shared frontend, one PEM per domain in cert_dir."""

    cert_dir: str
    port: int = Field(default=443, ge=1, le=65535)
    bind_address: str | None = None  # default: haproxy.bind_address
    alpn: list[str] = Field(default_factory=lambda: ["h2", "http/1.1"])
    min_version: Literal["TLSv1.0", "TLSv1.1", "TLSv1.2", "TLSv1.3"] = "TLSv1.2"
    hsts: int | None = Field(default=None, ge=0)  # Strict-Transport-Security max-age (s)
    redirect_http: bool = False  # plain-HTTP requests of the shared frontend -> https


class DockerServicesConfig(ConfigModel):
    """ours (edge): services made from Docker container labels alone (docs/edge.md).

    A running container with ``<label_prefix>service`` (and ``<label_prefix>port``, the
    port inside the container) becomes a server of that service, routed on the shared
    frontend by its ``<label_prefix>hosts`` and ``<label_prefix>paths`` (comma separated).
    """

    enabled: bool = False
    engine: str = "unix:///var/run/docker.sock"  # a docker `servers` entry: URL or host:port
    label_prefix: str = "smartstack."
