"""synapse's configuration: Airbnb synapse's schema, plus our documented additions.

Every Airbnb key keeps its meaning and default (docs/configuration.md). Keys we
add are marked "ours" below.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from smartstack.configfile import ConfigModel, load
from smartstack.registry_auth import EtcdTLS, ZooKeeperAuth, check_etcd_security
from smartstack.statsd import StatsdConfig

# Airbnb keys we accept without a warning although we do not act on them.
KNOWN_UNUSED_KEYS = ("generator_config_path", "discovery_jitter")

# Discovery methods of Airbnb synapse; the ones we implement are in synapse/watchers.
DiscoveryMethod = Literal[
    "base",
    "zookeeper",
    "zookeeper_poll",
    "etcd",
    "dns",
    "docker",
    "ec2tag",
    "marathon",
    "multi",
]


class LabelFilter(ConfigModel):
    label: str
    value: str
    condition: Literal["equals", "not-equals"] = "equals"


class DecodeConfig(ConfigModel):
    method: Literal["nerve", "serverset"] = "nerve"
    endpoint_name: str | None = None


class RetryPolicy(ConfigModel):
    max_attempts: int = Field(default=10, ge=1)
    max_delay: float = Field(default=600, gt=0)
    base_interval: float = Field(default=0.5, gt=0)
    max_interval: float = Field(default=60, gt=0)


class ServerEntry(ConfigModel):
    """A server given in the config (default_servers, static/docker servers lists)."""

    name: str | None = None
    host: str
    port: int | None = Field(default=None, ge=1, le=65535)

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: object) -> object:
        # dns/docker watchers list servers as plain "host" or "host:port" strings too.
        if isinstance(value, str):
            host, sep, port = value.rpartition(":")
            if sep and port.isdigit() and "]" not in port:
                return {"host": host.strip("[]"), "port": int(port)}
            return {"host": value}
        return value


class DiscoveryConfig(ConfigModel):
    method: DiscoveryMethod
    label_filters: list[LabelFilter] = Field(default_factory=list)
    # zookeeper / zookeeper_poll
    hosts: list[str] | None = None
    path: str | None = None
    decode: DecodeConfig = Field(default_factory=DecodeConfig)
    retry_policy: RetryPolicy = Field(default_factory=RetryPolicy)
    polling_interval_sec: float = Field(default=60, gt=0)
    zk_auth: ZooKeeperAuth | None = None  # ours: same identity model as nerve's zk_auth
    # etcd (Airbnb: host/port/path); ours: endpoints list
    host: str | None = None
    port: int = Field(default=4003, ge=1, le=65535)  # Airbnb default
    endpoints: list[str] | None = None
    # ours, the same keys as nerve's: user auth and TLS to etcd
    etcd_user: str | None = None
    etcd_password: str | None = None
    etcd_tls: EtcdTLS | None = None
    # dns / docker
    servers: list[ServerEntry] | None = None
    nameserver: str | None = None
    check_interval: float | None = Field(default=None, gt=0)
    image_name: str | None = None
    container_port: int | None = Field(default=None, ge=1, le=65535)
    label_selector: dict[str, str] | None = None  # ours (docker): match container labels
    # multi
    watchers: dict[str, dict] | None = None
    resolver: dict | None = None
    # ours: random delay before a watcher starts, to spread a fleet restart
    start_jitter: float = Field(default=0.0, ge=0)

    @field_validator("hosts", mode="before")
    @classmethod
    def _hosts_list(cls, value: object) -> object:
        if isinstance(value, str):
            return [h.strip() for h in value.split(",") if h.strip()]
        return value

    @model_validator(mode="after")
    def _required_per_method(self) -> DiscoveryConfig:
        needs: dict[str, tuple[str, ...]] = {
            "zookeeper": ("hosts", "path"),
            "zookeeper_poll": ("hosts", "path"),
            "dns": ("servers",),
            "docker": ("servers",),
        }
        for key in needs.get(self.method, ()):
            if not getattr(self, key):
                raise ValueError(f"discovery method {self.method} needs {key!r}")
        if self.method == "etcd":
            if not (self.host or self.endpoints):
                raise ValueError("discovery method etcd needs 'host' or 'endpoints'")
            if not self.path:
                raise ValueError("discovery method etcd needs 'path'")
            check_etcd_security(
                self.etcd_endpoint_list(), self.etcd_user, self.etcd_password, self.etcd_tls
            )
        if self.path is not None and not self.path.startswith("/"):
            raise ValueError(f"path must start with '/' (got {self.path!r})")
        return self

    def etcd_endpoint_list(self) -> list[str]:
        if self.endpoints:
            return list(self.endpoints)
        return [f"{self.host}:{self.port}"]


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
    default_servers: list[ServerEntry] = Field(default_factory=list)
    keep_default_servers: bool = False
    use_previous_backends: bool = True
    backend_port_override: int | None = Field(default=None, ge=1, le=65535)
    haproxy: ServiceHAProxyConfig = Field(default_factory=ServiceHAProxyConfig)
    file_output: FileOutputServiceConfig = Field(default_factory=FileOutputServiceConfig)

    @field_validator("default_servers")
    @classmethod
    def _defaults_need_ports(cls, value: list[ServerEntry]) -> list[ServerEntry]:
        # Airbnb: default_servers are {name, host, port}; a server without a port is unusable.
        for index, entry in enumerate(value):
            if entry.port is None:
                raise ValueError(f"default_servers[{index}] ({entry.host}) needs a 'port'")
        return value


class RegistryServerOptions(ConfigModel):
    """ours: whether ``haproxy_server_options`` from registry records is used at all."""

    allow: bool = False
    keywords: list[str] = Field(
        default_factory=lambda: ["backup", "weight", "maxconn", "slowstart", "disabled"]
    )


class ManagedHAProxy(ConfigModel):
    """ours: synapse starts HAProxy itself (master-worker) and reloads it via the master socket."""

    binary: str = "haproxy"
    master_socket_path: str | None = None  # default: beside config_file_path
    pid_file: str | None = None


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
    # ours: how long a reload (new worker answering) or a config check may take
    reload_timeout: float = Field(default=10.0, gt=0)

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
        if self.do_reloads and not self.managed and not self.reload_command:
            raise ValueError(
                "'reload_command' is required when do_reloads is true (or set 'managed')"
            )
        return self


class FileOutputConfig(ConfigModel):
    output_directory: str


class AdminConfig(ConfigModel):
    """ours: the admin HTTP server (/health, /status, /metrics, status page)."""

    host: str = "127.0.0.1"
    port: int | None = Field(default=3212, ge=0, le=65535)  # null disables it


# Keys of the early synapse list format that belong in the per-service haproxy block.
_LEGACY_HAPROXY_KEYS = {
    "local_port": "port",
    "server_options": "server_options",
    "listen": "listen",
    "frontend": "frontend",
    "backend": "backend",
}


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

    @field_validator("services", mode="before")
    @classmethod
    def _legacy_service_list(cls, value: object) -> object:
        """Accept the early synapse format: a list of services with 'name' and 'local_port'."""
        if not isinstance(value, list):
            return value
        services: dict[str, object] = {}
        for index, entry in enumerate(value):
            if not isinstance(entry, dict) or not entry.get("name"):
                raise ValueError(f"services[{index}] in the list format needs a 'name'")
            entry = dict(entry)
            name = str(entry.pop("name"))
            block = dict(entry.get("haproxy") or {})
            for old, new in _LEGACY_HAPROXY_KEYS.items():
                if old in entry:
                    block.setdefault(new, entry.pop(old))
            entry["haproxy"] = block
            services[name] = entry
        return services


def load_synapse_config(path: str | Path) -> tuple[SynapseConfig, list[str]]:
    return load(SynapseConfig, Path(path), KNOWN_UNUSED_KEYS)
