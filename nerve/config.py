"""nerve's configuration: Airbnb nerve's schema, plus our documented additions.

Every Airbnb key keeps its meaning and default (docs/configuration.md). Keys we
add are marked "ours" below.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Literal

from nerve.check_values import header_problem, uri_problem
from nerve.check_values import host_problem as check_host_problem
from nerve.config_units import unit_warnings
from nerve.exec_program import exec_warnings
from smartstack.admin_token import AdminAuthConfig
from smartstack.config_check import refuse_unspecified, services_problem
from smartstack.configfile import ConfigError, ConfigModel, load, service_sources
from smartstack.modelbase import Field, field_validator, model_validator
from smartstack.record_fields import MAX_WEIGHT, coerce_label_values
from smartstack.registry_address import (
    check_etcd_endpoints,
    check_etcd_host,
    check_zk_hosts,
    join_host_port,
    zk_path_problem,
)
from smartstack.registry_auth import EtcdTLS, ZooKeeperAuth, check_etcd_security
from smartstack.statsd import StatsdConfig, statsd_warnings

CheckType = Literal["http", "https", "tcp", "redis", "rabbitmq", "noop", "exec"]
NodeType = Literal["ephemeral_sequential", "ephemeral", "persistent", "persistent_sequential"]

# Ruby nerve's default connect timeout of an http check (http.rb)
RUBY_OPEN_TIMEOUT = 0.2
# Airbnb keys we accept without a warning although we do not act on them.
KNOWN_UNUSED_KEYS = ("max_repeated_report_failures", "open_timeout")


class CheckConfig(ConfigModel):
    type: CheckType
    name: str | None = None
    host: str | None = None  # default: the service's host
    port: int | None = Field(default=None, ge=1, le=65535)  # default: the service's port
    timeout: float = Field(default=0.1, gt=0)
    rise: int = Field(default=1, ge=1)
    fall: int = Field(default=1, ge=1)
    # http
    uri: str | None = None
    ssl: bool = False
    headers: dict[str, str] = Field(default_factory=dict)
    expect: str | None = None
    open_timeout: float | None = Field(default=None, gt=0)
    # Ruby nerve's Net::HTTP read timeout (http.rb): widens `timeout` (_ruby_read_timeout)
    read_timeout: float | None = Field(default=None, gt=0)
    # rabbitmq
    username: str | None = None
    password: str | None = None
    vhost: str | None = None
    # exec (ours): a command from the config file; exit 0 = up
    command: str | list[str] | None = None

    @field_validator("headers", mode="before")
    @classmethod
    def _header_text(cls, value: object) -> object:
        # YAML gives `X-Retries: 3` as a number: sent as the text it was written as.
        return coerce_label_values(value)

    @field_validator("uri")
    @classmethod
    def _request_target(cls, value: str | None) -> str | None:
        if value and (problem := uri_problem(value)):
            raise ValueError(problem)
        return value

    @field_validator("headers")
    @classmethod
    def _sendable_headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if problem := header_problem(name, text):
                raise ValueError(problem)
        return value

    @field_validator("host")
    @classmethod
    def _no_whitespace(cls, value: str | None) -> str | None:
        if value is not None and (problem := check_host_problem(value)):
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _required_per_type(self) -> CheckConfig:
        if self.type in ("http", "https") and not self.uri:
            raise ValueError(f"a {self.type} check needs 'uri' (e.g. /health)")
        if self.type == "exec" and not self.command:
            raise ValueError("an exec check needs 'command'")
        return self

    @model_validator(mode="after")
    def _ruby_read_timeout(self) -> CheckConfig:
        # Ruby nerve gives an http check's connect open_timeout (0.2 by default) and its
        # answer read_timeout, whatever `timeout` says: a Ruby file with `read_timeout: 2`
        # for a health page answering in 0.4 s must not fail every check here.
        if self.read_timeout is not None and self.type in ("http", "https"):
            connect = RUBY_OPEN_TIMEOUT if self.open_timeout is None else self.open_timeout
            self.timeout = max(self.timeout, connect + self.read_timeout)
        return self

    @property
    def display_name(self) -> str:
        return self.name or f"{self.type}"


# "No max_burst" (Ruby: infinity): a cap never reached. Infinity itself cannot go into
# nerve.ratelimit's TokenBucket (math.floor of it raises).
UNLIMITED_BURST = 1e9


class RateLimiting(ConfigModel):
    # Airbnb: each key optional; no average_rate or no max_burst means no limit on it
    average_rate: float | None = Field(default=None, gt=0)
    max_burst: float | None = Field(default=None, ge=1)
    shadow_mode: bool = True  # Airbnb default: only log what would be limited

    def limits(self) -> tuple[float, float, bool] | None:
        """(average_rate, max_burst, shadow_mode) for the token bucket; None: no bucket
        (no finite average_rate: every change goes through, as in Ruby)."""
        rate, burst = self.average_rate, self.max_burst
        if rate is None or not math.isfinite(rate):
            return None
        if burst is None or not math.isfinite(burst):
            burst = UNLIMITED_BURST
        return rate, burst, self.shadow_mode


class NerveZooKeeperAuth(ZooKeeperAuth):
    """ours: the shared ZooKeeper identity, plus the ACL of the nodes nerve creates."""

    acl: Literal["open", "creator", "read_only_world"] = "open"


class ServiceConfig(ConfigModel):
    host: str
    port: int = Field(ge=1, le=65535)
    check_interval: float = Field(default=0.5, gt=0)
    checks: list[CheckConfig] = Field(default_factory=list)
    # Airbnb: skip the checks, always report up (load tests)
    check_mocked: bool = False
    # Airbnb: any non-negative integer; the record says at most 256 (record_weight)
    weight: int | None = Field(default=None, ge=0)
    haproxy_server_options: str | None = None
    labels: dict[str, Any] = Field(default_factory=dict)  # checked by _valid_record
    reporter_type: Literal["zookeeper", "etcd"] = "zookeeper"
    # zookeeper
    zk_hosts: list[str] | None = None
    zk_path: str | None = None
    node_type: NodeType = "ephemeral_sequential"
    use_path_encoding: bool = False
    # Airbnb: re-write a persistent node's data this often (its mtime shows nerve is alive);
    # ignored for ephemeral node types, as in Ruby nerve
    ttl_seconds: float | None = Field(default=None, gt=0)
    zk_auth: NerveZooKeeperAuth | None = None  # ours
    zk_session_timeout: float = Field(default=10.0, gt=0)  # ours, seconds
    # etcd
    etcd_host: str | None = None
    etcd_port: int = Field(default=4003, ge=1, le=65535)  # Airbnb default
    etcd_path: str = "/"
    etcd_endpoints: list[str] | None = None  # ours: ["host:port", ...]
    etcd_lease_ttl: int = Field(default=5, ge=2)  # ours, seconds
    etcd_user: str | None = None  # ours
    etcd_password: str | None = None  # ours
    etcd_tls: EtcdTLS | None = None  # ours
    # ours: json = etcd's JSON gateway (no gRPC loaded), grpc, auto = json unless the
    # service has a client certificate (etcd_transport_used)
    etcd_transport: Literal["auto", "grpc", "json"] = "auto"
    rate_limiting: RateLimiting | None = None
    # ours: also withdraw when this file exists (a load balancer "drain" flag)
    maintenance_file: str | None = None

    @field_validator("host")
    @classmethod
    def _reachable_host(cls, value: str) -> str:
        return refuse_unspecified(value)

    @field_validator("labels", mode="before")
    @classmethod
    def _label_values(cls, value: object) -> object:
        # Numbers, booleans, lists and objects are written as they are, as Ruby nerve does
        # (Ruby synapse's label_filters compare types: "true" misses `value: true`); synapse
        # reads them as text. A null (YAML `owner:`) is left out, as synapse drops it.
        if isinstance(value, dict):
            return {key: item for key, item in value.items() if item is not None}
        return value

    @field_validator("zk_hosts", mode="before")
    @classmethod
    def _hosts_list(cls, value: object) -> object:
        # Airbnb configs sometimes give one "h1:2181,h2:2181" string.
        if isinstance(value, str):
            return [h.strip() for h in value.split(",") if h.strip()]
        return value

    @field_validator("zk_path", mode="before")
    @classmethod
    def _znode_path(cls, value: object) -> object:
        # (before: the absolute-path check would blame a leading space as "not absolute")
        if isinstance(value, str) and (problem := zk_path_problem(value)):
            raise ValueError(problem)
        return value

    @field_validator("zk_path", "etcd_path")
    @classmethod
    def _absolute_path(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            raise ValueError(f"must be an absolute path starting with '/' (got {value!r})")
        return value.rstrip("/") or "/" if value is not None else None

    @model_validator(mode="after")
    def _reporter_keys(self) -> ServiceConfig:
        if self.reporter_type == "zookeeper":
            if not self.zk_hosts:
                raise ValueError("reporter_type zookeeper needs 'zk_hosts' (list of host:port)")
            if not self.zk_path:
                raise ValueError("reporter_type zookeeper needs 'zk_path'")
            check_zk_hosts(self.zk_hosts, "zk_hosts")  # (kazoo's parser fails only once running)
        elif not (self.etcd_host or self.etcd_endpoints):
            raise ValueError("reporter_type etcd needs 'etcd_host' or 'etcd_endpoints'")
        else:
            if self.etcd_endpoints:
                check_etcd_endpoints(self.etcd_endpoints, "etcd_endpoints")
            else:
                check_etcd_host(self.etcd_host or "", "etcd_host")
            check_etcd_security(
                self.etcd_endpoint_list(), self.etcd_user, self.etcd_password, self.etcd_tls
            )
        return self

    @model_validator(mode="after")
    def _valid_record(self) -> ServiceConfig:
        # What nerve registers must pass the validation every reader applies to it, its size
        # too (with the longest name an instance_id may give): over it every synapse would
        # skip the record as bad, the instance registered and never served.
        from smartstack.record import (
            MAX_NAME_LENGTH,
            MAX_RECORD_BYTES,
            InvalidRecord,
            Registration,
            encode,
        )

        try:
            record = Registration(
                host=self.host,
                port=self.port,
                name="n" * MAX_NAME_LENGTH,
                weight=self.record_weight,
                labels=self.labels,
                haproxy_server_options=self.haproxy_server_options,
            )
        except InvalidRecord as exc:
            raise ValueError(f"the record nerve would register is invalid: {exc.reason}") from None
        size = len(encode(record))
        if size > MAX_RECORD_BYTES:
            raise ValueError(
                f"the record nerve would register takes up to {size} bytes, over the "
                f"{MAX_RECORD_BYTES} every synapse reads: fewer or shorter labels"
            )
        return self

    @property
    def record_weight(self) -> int | None:
        """The weight the record says: ``weight``, at most 256. HAProxy takes no more
        (Ruby synapse with use_nerve_weights would write a config HAProxy refuses), and
        older synapses of ours refuse a record above 256: at 256 every synapse keeps it."""
        return None if self.weight is None else min(self.weight, MAX_WEIGHT)

    def etcd_endpoint_list(self) -> list[str]:
        if self.etcd_endpoints:
            return list(self.etcd_endpoints)
        return [join_host_port(self.etcd_host or "", self.etcd_port)]

    def etcd_transport_used(self) -> Literal["grpc", "json"]:
        """``etcd_transport``, auto decided: etcd's gateway calls etcd back with etcd's own
        server certificate, so under --client-cert-auth it works only if that certificate
        also allows clientAuth: with a client certificate, gRPC unless ``json`` is said."""
        if self.etcd_transport != "auto":
            return self.etcd_transport
        return "grpc" if self.etcd_tls is not None and self.etcd_tls.cert_cert else "json"


PLACEHOLDER_HOST = "127.0.0.1"  # validates docker.service_defaults before any container exists


def service_config(
    defaults: dict[str, Any],
    service: str,
    host: str,
    port: int,
    checks: list[dict[str, Any]],
    extra: dict[str, Any],
) -> ServiceConfig:
    """A service block made from Docker mode's ``service_defaults`` and one container."""
    block = {k: v for k, v in defaults.items() if k not in ("host", "port", "checks")}
    for key in ("zk_path", "etcd_path"):
        if isinstance(block.get(key), str):
            block[key] = block[key].replace("{service}", service)
    block.update(extra, host=host, port=port, checks=checks)
    return ServiceConfig.model_validate(block)


class DockerModeConfig(ConfigModel):
    """ours: the `docker` block of a nerve config."""

    url: str = "unix:///var/run/docker.sock"
    # published: register host + the published port; container: the container's IP + port
    address: Literal["published", "container"] = "published"
    host: str | None = None  # published mode: the address consumers use for this host
    network: str | None = None  # container mode: whose IP (default: first network by name)
    label_prefix: str = "smartstack"
    # seconds between full re-reads of the container list (a stream that died silently,
    # e.g. an idle tcp:// connection dropped by a NAT, is mended by it)
    resync_interval: float = Field(default=60.0, gt=0)
    # e.g. a sidecar's own app; "{instance_id}" in a value is replaced by nerve's instance_id
    label_selector: dict[str, str] = Field(default_factory=dict)
    # A nerve service block without host/port/checks: registry keys, check_interval, ...
    # "{service}" in zk_path / etcd_path is replaced by the container's service label.
    service_defaults: dict[str, Any]

    @model_validator(mode="after")
    def _defaults_make_a_service(self) -> DockerModeConfig:
        service_config(self.service_defaults, "example", PLACEHOLDER_HOST, 1, [], {})
        return self

    def selector(self, instance_id: str) -> dict[str, str]:
        """label_selector with "{instance_id}" filled in."""
        return {k: v.replace("{instance_id}", instance_id) for k, v in self.label_selector.items()}


class AdminConfig(AdminAuthConfig):
    """ours: the admin HTTP server (/health, /status, /metrics, maintenance)."""

    host: str = "127.0.0.1"
    port: int | None = Field(default=1025, ge=0, le=65535)  # null disables it


class NerveConfig(ConfigModel):
    instance_id: str
    services: dict[str, ServiceConfig] = Field(default_factory=dict)
    service_conf_dir: str | None = None
    heartbeat_path: str | None = None
    max_repeated_report_failures: int = 10
    admin: AdminConfig = Field(default_factory=AdminConfig)  # ours
    docker: DockerModeConfig | None = None  # ours: containers become services (docs/docker.md)
    state_dir: str | None = None  # ours: where maintenance flags survive restarts
    statsd: StatsdConfig | None = None  # Airbnb {host, port}; ours: prefix

    @field_validator("instance_id")
    @classmethod
    def _safe_instance_id(cls, value: str) -> str:
        from smartstack.record import InvalidRecord, validate_name

        try:
            return validate_name(value)
        except InvalidRecord as exc:
            raise ValueError(exc.reason) from None


def load_nerve_config(
    path: str | Path, instance_id: str | None = None, strict: bool = False, **copy: Any
) -> tuple[NerveConfig, list[str]]:
    """Load a nerve config; ``instance_id`` (flag -i) or NERVE_INSTANCE_ID override the file.
    ``copy``: ``document``/``keep`` of smartstack.configfile.load (a last good copy).

    A file with no source of services is refused: that nerve would register nothing.
    """
    override = instance_id or os.environ.get("NERVE_INSTANCE_ID")
    overrides = {"instance_id": override} if override else None
    config, warnings = load(NerveConfig, Path(path), KNOWN_UNUSED_KEYS, overrides,
                            strict=strict, **copy)  # fmt: skip
    if config.docker is None:
        error, warning = services_problem(
            Path(path), config.services, config.service_conf_dir, "'docker'"
        )
        if error:
            raise ConfigError([error])
        warnings += [warning] if warning else []
    warnings += statsd_warnings(path, config.statsd)
    return config, warnings + _weight_warnings(Path(path), config) + _block_warnings(path, config)


def _block_warnings(path: str | Path, config: NerveConfig) -> list[str]:
    """Per service block: times that look like milliseconds (nerve/config_units.py), exec
    checks whose program cannot be started (nerve/exec_program.py)."""
    files = service_sources(Path(path), config.service_conf_dir)  # (a service file's own)
    blocks = [(files.get(n, Path(path)), f"services.{n}", s) for n, s in config.services.items()]
    if config.docker is not None:
        defaults = config.docker.service_defaults
        example = service_config(defaults, "example", PLACEHOLDER_HOST, 1, [], {})
        blocks.append((Path(path), "docker.service_defaults", example))
    lines = [line for file, where, s in blocks for line in unit_warnings(file, where, s)]
    for file, where, s in blocks:  # (Docker mode's checks come from labels, at run time)
        commands = [c.command if c.type == "exec" else None for c in s.checks]
        lines += exec_warnings(file, where, commands)
    return lines


def _weight_warnings(path: Path, config: NerveConfig) -> list[str]:
    """A weight above 256 is accepted (Ruby nerve takes any), but the record says 256."""
    weights = {f"services.{name}.weight": s.weight for name, s in config.services.items()}
    if config.docker is not None:
        weights["docker.service_defaults.weight"] = config.docker.service_defaults.get("weight")
    return [
        f"{path}: {where}: {weight} is above {MAX_WEIGHT}, HAProxy's largest server weight: "
        f"the record says {MAX_WEIGHT}"
        for where, weight in weights.items()
        if isinstance(weight, int) and weight > MAX_WEIGHT
    ]
