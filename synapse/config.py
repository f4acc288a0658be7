"""synapse's configuration: Airbnb synapse's schema, plus our documented additions.

Every Airbnb key keeps its meaning and default (docs/configuration.md). Keys we
add are marked "ours" below.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import Any, Literal

from smartstack.admin_token import AdminAuthConfig
from smartstack.config_check import services_problem
from smartstack.config_sections import SectionCache
from smartstack.config_share import share_defaults
from smartstack.configfile import ConfigError, load
from smartstack.modelbase import ConfigModel, Field, field_validator, model_validator
from smartstack.statsd import StatsdConfig, statsd_warnings
from synapse.config_checks import check_routes, check_zone_routing, relative_socket_path
from synapse.config_legacy import prepare_document, services_from_list
from synapse.discovery_config import DefaultServerEntry, DiscoveryConfig
from synapse.edge_config import (
    HAPROXY_TIME,
    DockerServicesConfig,
    HAProxyLogging,
    HAProxyTLS,
    ServiceRoutes,
)
from synapse.haproxy_units import unit_warnings
from synapse.port_clash import admin_port_clashes, bind_clashes, bind_shadows
from synapse.proxy_name import check_proxy_name
from synapse.resilience_config import HealthCheckConfig, ObserveConfig, RetriesConfig
from synapse.server_host import host_problem
from synapse.shared_discovery import shared_discovery_warnings
from synapse.zone_config import ZoneRouting, check_dynamic_balance, check_zone_name

DEFAULT_ADMIN_PORT = 1026

# Airbnb keys we accept without a warning although we do not act on them.
KNOWN_UNUSED_KEYS = ("discovery_jitter",)


class ServiceHAProxyConfig(ConfigModel):
    disabled: bool = False
    port: int | None = Field(default=None, ge=1, le=65535)
    bind_address: str | None = None
    bind_options: str | None = None
    server_options: str | None = None
    server_port_override: int | None = Field(default=None, ge=1, le=65535)
    frontend: list[str] = Field(default_factory=list)
    backend: list[str] = Field(default_factory=list)
    listen: list[str] = Field(default_factory=list)
    backend_name: str | None = None
    backend_order: Literal["shuffle", "asc", "desc", "no_shuffle"] = "shuffle"
    shared_frontend: list[str] = Field(default_factory=list)
    cookie_value_method: Literal["name", "hash"] = "name"
    use_nerve_weights: bool = False
    # ours (edge): routes on the shared frontend, proxy protocol and queueing
    routes: ServiceRoutes = Field(default_factory=ServiceRoutes)
    accept_proxy: bool = False  # `accept-proxy` on this service's frontend bind
    send_proxy_v2: bool = False  # `send-proxy-v2` on every server of this service
    maxconn: int | None = Field(default=None, ge=1)  # per server: more requests queue
    maxqueue: int | None = Field(default=None, ge=0)  # per server queue bound (0: none)
    timeout_queue: str | None = None  # backend `timeout queue`, e.g. "5s" (HAProxy time)
    # ours: /health/<service> is 503 with fewer UP servers than this in HAProxy
    min_up: int = Field(default=1, ge=0)
    # ours: a request waits this long for a usable server (None: haproxy's; 0: 503 at once)
    wait_for_server_ms: int | None = Field(default=None, ge=0, le=60000)

    @field_validator("backend_name")
    @classmethod
    def _backend_name(cls, value: str | None) -> str | None:
        return None if value is None else check_proxy_name(value)

    @field_validator("timeout_queue", mode="before")
    @classmethod
    def _haproxy_time(cls, value: object) -> object:
        # A bare number is milliseconds, as in HAProxy.
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if isinstance(value, str) and not HAPROXY_TIME.fullmatch(value):
            raise ValueError(f"expected an HAProxy time such as 500ms, 5s or 1m (got {value!r})")
        return value

    # ours: request retries (None: managed-mode default, false: none), see RetriesConfig
    retries: RetriesConfig | bool | None = None
    observe: ObserveConfig | None = None
    health_check: HealthCheckConfig = Field(default_factory=HealthCheckConfig)

    @property
    def has_frontend(self) -> bool:
        """Airbnb: absent ``port`` = backend only; ``port: null`` = bind address only."""
        return "port" in self.model_fields_set

    @field_validator("frontend", "backend", "listen", "shared_frontend", mode="before")
    @classmethod
    def _lines(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value


class FileOutputServiceConfig(ConfigModel):
    disabled: bool = False


class ServiceConfig(ConfigModel):
    discovery: DiscoveryConfig
    # Airbnb: route only to the server with the lowest sequence number (selection.py)
    leader_election: bool = False
    default_servers: list[DefaultServerEntry] = Field(default_factory=list)
    keep_default_servers: bool = False
    use_previous_backends: bool = True
    backend_port_override: int | None = Field(default=None, ge=1, le=65535)
    haproxy: ServiceHAProxyConfig = Field(default_factory=ServiceHAProxyConfig)
    file_output: FileOutputServiceConfig = Field(default_factory=FileOutputServiceConfig)
    zone_routing: ZoneRouting | None = None  # ours

    @model_validator(mode="before")
    @classmethod
    def _discovery_multi(cls, value: object) -> object:
        # Airbnb's discovery_multi: a multi watcher whose 'primary' child is `discovery`.
        if not isinstance(value, dict) or "discovery_multi" not in value:
            return value
        value = dict(value)
        multi = dict(value.pop("discovery_multi") or {})
        multi.setdefault("method", "multi")
        multi["watchers"] = {**(multi.get("watchers") or {}), "primary": value.get("discovery")}
        value["discovery"] = multi
        return value

    @property
    def port_override(self) -> int | None:
        """Airbnb: ``haproxy.server_port_override`` is an alias of ``backend_port_override``
        (which wins), applied before servers are named."""
        return self.backend_port_override or self.haproxy.server_port_override

    @model_validator(mode="after")
    def _zone_weights_at_runtime(self) -> ServiceConfig:
        if self.zone_routing is not None:
            check_dynamic_balance([*self.haproxy.backend, *self.haproxy.listen])
        return self

    @model_validator(mode="after")
    def _share_defaults(self) -> ServiceConfig:
        # One instance of each section left at its defaults, not one per service (issue
        # 15); `haproxy` stays the service's own: SynapseConfig writes use_nerve_weights.
        share_defaults(self, keep=("haproxy",))
        return self

    @field_validator("default_servers")
    @classmethod
    def _defaults_need_ports(cls, value: list[DefaultServerEntry]) -> list[DefaultServerEntry]:
        # Airbnb: default_servers are {name, host, port}; a server without a port is unusable.
        for index, entry in enumerate(value):
            if entry.port is None:
                raise ValueError(f"default_servers[{index}] ({entry.host}) needs a 'port'")
            # The renderer would skip it (every request a 503) where -k said ok.
            if problem := host_problem(entry.host):
                raise ValueError(f"default_servers[{index}].host {problem}")
        return value


class RegistryServerOptions(ConfigModel):
    """ours: whether ``haproxy_server_options`` from registry records is used at all."""

    allow: bool = False
    keywords: list[str] = Field(
        default_factory=lambda: ["backup", "weight", "maxconn", "slowstart", "disabled"]
    )


_URL_PATH = re.compile(r"/[A-Za-z0-9._~/-]*")


class HAProxyStats(ConfigModel):
    """ours: HAProxy's own stats page and Prometheus exporter, on an admin address.

    Rendered as ``frontend synapse_stats`` (synapse/haproxy/stats_page.py). Local by
    default: the stats page shows every backend and server address.
    """

    enabled: bool = True
    bind: str = "127.0.0.1:8404"  # HAProxy bind address ([host]:port)
    uri: str = "/stats"  # the HTML stats page
    metrics_path: str = "/metrics"  # the Prometheus exporter
    refresh: int = Field(default=10, ge=1, le=3600)  # the stats page's auto-refresh (s)

    @field_validator("bind")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, colon, port = value.rpartition(":")
        if not colon or not port.isdigit() or not 1 <= int(port) <= 65535 or " " in host:
            raise ValueError(f"{value!r} is not HOST:PORT (e.g. 127.0.0.1:8404)")
        return value

    @field_validator("uri", "metrics_path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not _URL_PATH.fullmatch(value):
            raise ValueError(f"{value!r} is not a URL path (e.g. /stats)")
        return value

    @model_validator(mode="after")
    def _distinct(self) -> HAProxyStats:
        if self.uri.rstrip("/") == self.metrics_path.rstrip("/"):
            raise ValueError("'uri' and 'metrics_path' must differ")
        return self


class ManagedHAProxy(ConfigModel):
    """ours: synapse starts HAProxy itself (master-worker) and reloads it via the master socket."""

    binary: str = "haproxy"
    master_socket_path: str | None = None  # default: beside config_file_path
    pid_file: str | None = None
    stats: HAProxyStats = Field(default_factory=HAProxyStats)
    # false: HAProxy serves on when synapse stops (the next one adopts it); true: soft-stopped
    # with synapse; auto: true where it cannot outlive synapse (a container: exit_policy)
    stop_on_exit: bool | Literal["auto"] = "auto"
    stop_grace: float = Field(default=8.0, ge=0, le=120)  # s for in-flight work at a stop
    # s HAProxy serves on after the stop signal, before its soft stop (synapse.stop_delay)
    stop_delay: float | Literal["auto"] = "auto"  # auto: 5 in a container, else 0
    hold_listeners: bool = True  # copies of its listeners: a crash's clients wait, not refused
    launch: bool = True  # false: HAProxy runs in its own container; synapse never starts one

    @field_validator("stop_grace", mode="before")
    @classmethod
    def _grace(cls, value: Any) -> Any:
        if isinstance(value, bool):  # (true was taken as 1 s)
            raise ValueError(f"{value!r}: stop_grace is 0-120 (seconds)")
        return value

    @field_validator("stop_delay", mode="before")
    @classmethod
    def _delay(cls, value: Any) -> Any:
        if value == "auto":
            return value
        if isinstance(value, str):  # "5", as every other number here (stop_grace)
            with contextlib.suppress(ValueError):
                value = float(value)
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 120:
            raise ValueError(f"{value!r}: stop_delay is auto or 0-120 (seconds)")
        return value

    def stop_delay_unused(self) -> str | None:
        """Why an explicit ``stop_delay`` > 0 cannot apply (synapse never stops HAProxy)."""
        if self.stop_delay == "auto" or self.stop_delay == 0:
            return None
        if not self.launch:
            return (
                "launch is false: synapse never stops HAProxy "
                "(haproxy-wait's SMARTSTACK_STOP_DELAY delays its stop)"
            )
        if self.stop_on_exit is False:
            return "stop_on_exit is false: HAProxy is left serving at synapse's exit"
        return None


class HAProxyConfig(ConfigModel):
    global_: list[str] = Field(default_factory=list, alias="global")
    defaults: list[str] = Field(default_factory=list)
    extra_sections: dict[str, list[str]] = Field(default_factory=dict)
    config_file_path: str | None = None
    do_writes: bool = True
    reload_command: str | None = None
    do_reloads: bool = True
    socket_file_path: str | list[str] | None = None
    do_socket: bool = True
    do_checks: bool = False
    check_command: str | None = None
    candidate_config_file_path: str | None = None
    bind_address: str = "localhost"
    shared_frontend: list[str] = Field(default_factory=list)
    restart_interval: float = Field(default=2.0, ge=0)
    restart_jitter: float = Field(default=0.0, ge=0, le=1)
    state_file_path: str | None = None
    state_file_ttl: float = Field(default=86400, gt=0)
    server_order_seed: int | None = None
    max_server_id: int = Field(default=65535, ge=1)
    # ours
    managed: ManagedHAProxy | None = None
    template: str | None = None  # path to a user jinja2 template
    server_state_file: str | None = None  # HAProxy's server-state-file, kept across reloads
    registry_server_options: RegistryServerOptions = Field(default_factory=RegistryServerOptions)
    remove_servers: Literal["maint", "delete"] = "maint"  # what happens to a server that left
    # extra window (ms) after the first change of a burst; 0: leading-edge coalescing only
    coalesce_ms: float = Field(default=0, ge=0)
    pace_ms: float = Field(default=4, ge=0)  # ours: the cap of the wait between rounds in a stream
    # ours: how long a reload (new worker answering) or a config check may take
    reload_timeout: float = Field(default=10.0, gt=0)
    # Airbnb's code reads it here (its README: per service); a service's own value wins
    use_nerve_weights: bool | None = None
    # ours (edge): access logs, and proxy protocol on the shared frontend's binds
    logging: HAProxyLogging | None = None
    accept_proxy: bool = False
    tls: HAProxyTLS | None = None
    # ours: the services' default wait for a usable server (synapse.haproxy.server_wait)
    wait_for_server_ms: int | None = Field(default=None, ge=0, le=60000)

    @property
    def socket_paths(self) -> list[str]:
        if self.socket_file_path is None:
            return []
        if isinstance(self.socket_file_path, str):
            return [self.socket_file_path]
        return list(self.socket_file_path)

    @model_validator(mode="after")
    def _writes_need_a_path(self) -> HAProxyConfig:
        if (self.do_writes or self.managed) and not self.config_file_path:
            raise ValueError("'config_file_path' is required when do_writes is true")
        if self.tls is not None and not (
            self.shared_frontend or "shared_frontend" in self.model_fields_set
        ):
            raise ValueError("'tls' terminates TLS on the shared frontend: set 'shared_frontend'")
        if self.tls is not None and not self.config_file_path:
            raise ValueError("'tls' needs 'config_file_path' (the crt-list lives beside it)")
        if problem := relative_socket_path(self):
            raise ValueError(problem)
        if self.do_reloads and not self.managed and not self.reload_command:
            raise ValueError(
                "'reload_command' is required when do_reloads is true (or set 'managed')"
            )
        return self


class FileOutputConfig(ConfigModel):
    output_directory: str


class AdminConfig(AdminAuthConfig):
    """ours: the admin HTTP server (/health, /status, /metrics, status page)."""

    host: str = "127.0.0.1"
    # Not 3212: Airbnb configs give that port to `listen stats :3212`. 1026: beside nerve's
    # 1025, below the 3000-4999 range SmartStack service ports use. -k reports clashes.
    port: int | None = Field(default=DEFAULT_ADMIN_PORT, ge=0, le=65535)  # null disables it


class SynapseConfig(ConfigModel):
    services: dict[str, ServiceConfig] = Field(default_factory=dict)
    haproxy: HAProxyConfig | None = None
    file_output: FileOutputConfig | None = None
    service_conf_dir: str | None = None
    admin: AdminConfig = Field(default_factory=AdminConfig)
    statsd: StatsdConfig | None = None  # Airbnb {host, port, sample_rate}; ours: prefix
    # ours: how long the first HAProxy update waits for every watcher's first answer before
    # it falls back to the state file / default_servers for the services still silent.
    startup_wait: float = Field(default=3.0, ge=0)
    # ours: the zone this synapse and its HAProxy are in (--zone, SYNAPSE_ZONE override it)
    zone: str | None = None
    # ours (edge): services from Docker container labels (synapse.docker_services)
    docker_services: DockerServicesConfig | None = None

    @field_validator("zone")
    @classmethod
    def _zone_name(cls, value: str | None) -> str | None:
        return None if value is None else check_zone_name(value)

    @field_validator("services", mode="before")
    @classmethod
    def _legacy_service_list(cls, value: object) -> object:
        return services_from_list(value)  # (the early synapse format: a list of services)

    @model_validator(mode="after")
    def _zone_weights_with_default_balance(self) -> SynapseConfig:
        check_zone_routing(self)
        return self

    @model_validator(mode="after")
    def _top_level_nerve_weights(self) -> SynapseConfig:
        # Ruby reads haproxy.use_nerve_weights at the top level; accept it there and per
        # service: the per-service value (what the renderer reads) defaults to the top one.
        default = self.haproxy.use_nerve_weights if self.haproxy else None
        if default is not None:
            for service in self.services.values():
                if "use_nerve_weights" not in service.haproxy.model_fields_set:
                    service.haproxy.use_nerve_weights = default
        return self

    @model_validator(mode="after")
    def _routes(self) -> SynapseConfig:
        check_routes(self)  # (the shared frontend; no host + path to two services)
        return self


def service_cache() -> SectionCache:
    """Per-service validation results kept between loads (the daemon's SIGHUP): a service
    whose part of the file is unchanged comes back as the same ServiceConfig object."""

    def context(doc: dict[str, Any]) -> Any:
        # SynapseConfig._top_level_nerve_weights writes this default into the services.
        top = doc.get("haproxy")
        return top.get("use_nerve_weights") if isinstance(top, dict) else None

    return SectionCache(ServiceConfig, "services", context)


def load_synapse_config(
    path: str | Path,
    zone: str | None = None,
    strict: bool = False,
    cache: SectionCache | None = None,
    **copy: Any,
) -> tuple[SynapseConfig, list[str]]:
    """Load a synapse config: ERB ``<%= ENV[...] %>`` tags are rendered first, as Ruby does.
    ``copy``: ``document``/``keep`` of smartstack.configfile.load (a last good copy).

    The zone is ``zone`` (--zone), else $SYNAPSE_ZONE, else the file's. Like Airbnb's
    synapse, a config without services is refused. ``cache`` (``service_cache()``): the
    services unchanged since the last load with it are not validated again.
    """
    override = zone or os.environ.get("SYNAPSE_ZONE")
    config, warnings = load(
        SynapseConfig,
        Path(path),
        KNOWN_UNUSED_KEYS,
        {"zone": override} if override else None,
        erb=True,
        prepare=prepare_document,
        strict=strict,
        sections=cache,
        **copy,
    )
    error, warning = services_problem(Path(path), config.services, config.service_conf_dir)
    if error and not (config.docker_services and config.docker_services.enabled):
        raise ConfigError([error])
    clashes = admin_port_clashes(config) + bind_clashes(config)
    if clashes:
        raise ConfigError([f"{path}: {line}" for line in clashes])
    warnings += [f"{path}: {line}" for line in bind_shadows(config)]
    warnings += [f"{path}: {line}" for line in shared_discovery_warnings(config.services)]
    warnings += unit_warnings(config, Path(path))
    warnings += statsd_warnings(path, config.statsd)
    managed = config.haproxy.managed if config.haproxy is not None else None
    unused = managed.stop_delay_unused() if managed is not None else None
    if unused:
        warnings.append(f"{path}: haproxy.managed.stop_delay does not apply: {unused}")
    return config, warnings + ([warning] if warning else [])
