"""A service's ``discovery`` block: Airbnb synapse's watcher keys, plus ours."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

from smartstack.modelbase import ConfigModel, Field, field_validator, model_validator
from smartstack.record import _coerce_labels
from smartstack.record_fields import loose_weight
from smartstack.registry_address import (
    check_etcd_endpoints,
    check_etcd_host,
    check_zk_hosts,
    is_ip_address,
    join_host_port,
    zk_path_problem,
)
from smartstack.registry_auth import EtcdTLS, ZooKeeperAuth, check_etcd_security
from synapse.server_host import host_problem

# Discovery methods of Airbnb synapse; the ones we implement are in synapse/watchers.
DiscoveryMethod = Literal[
    "base",
    "zookeeper",
    "zookeeper_poll",
    "zookeeper_dns",
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

    @field_validator("value", mode="before")
    @classmethod
    def _scalar_as_text(cls, value: object) -> object:
        # Ruby compares the YAML value with the record's as they are (`value: true` matches
        # nerve's `canary: true`); records' labels are strings here, made by the same rule.
        return _coerce_labels({"value": value})["value"]


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
        # dns/docker watchers list servers as plain "host" or "host:port" strings too,
        # IPv6 in brackets ("fd00::13" was read as host "fd00:", port 13: never served).
        if not isinstance(value, str):
            return value
        if value.startswith("["):
            host, bracket, rest = value[1:].partition("]")
            if not bracket or (rest and not (rest[:1] == ":" and rest[1:].isdigit())):
                raise ValueError(f"{value!r}: an IPv6 server is written '[::1]' or '[::1]:port'")
            return {"host": host, "port": int(rest[1:])} if rest else {"host": host}
        if value.count(":") > 1 and "://" not in value:  # (docker's 'tcp://host:port')
            if not value.rpartition(":")[2].isdigit() and is_ip_address(value):
                return {"host": value}  # ('2001:db8::a': no port could be meant)
            raise ValueError(
                f"{value!r}: an IPv6 address goes in brackets: '[{value}]', with a port "
                "'[address]:port' (or the form {host: ..., port: ...})"
            )
        host, sep, port = value.rpartition(":")
        if sep and port.isdigit():
            return {"host": host, "port": int(port)}
        return {"host": value}


class DefaultServerEntry(ServerEntry):
    """A ``default_servers`` entry: Ruby synapse takes it as a whole backend, so its
    ``haproxy_server_options`` (a sorry server's ``backup``) and, with ``use_nerve_weights``,
    its ``weight`` reach its server line (from the config file: no allow-list applies)."""

    haproxy_server_options: str | None = None
    weight: int | None = Field(default=None, ge=0, le=256)

    @field_validator("weight", mode="before")
    @classmethod
    def _weight_as_records(cls, value: object) -> object:
        # As a record's weight (loose_weight): Ruby synapse ignores the entry's weight
        # without use_nerve_weights and any weight that is not an Integer, so a Ruby file
        # with `weight: 500` loaded there: above 256 it is 256 (HAProxy's largest), not a
        # refused file; not an integer (true, "7", -1) it is not used.
        return loose_weight(value)[0]

    @field_validator("haproxy_server_options")
    @classmethod
    def _one_line(cls, value: str | None) -> str | None:
        if value is not None and (any(ord(c) < 32 or ord(c) == 127 for c in value) or "#" in value):
            raise ValueError("a control character or '#' cannot go into a server line")
        return value


class ResolverConfig(ConfigModel):
    """A ``multi`` watcher's resolver: ``sequential`` (first child with servers) or ``union``."""

    method: str
    sequential_order: list[str] | None = None

    @field_validator("method")
    @classmethod
    def _known(cls, value: str) -> str:
        value = value.lower()
        if value == "s3_toggle":
            raise ValueError(
                "resolver method 's3_toggle' is not supported (it reads weights from S3): "
                "use 'sequential' or 'union'"
            )
        if value not in ("sequential", "union"):
            raise ValueError(f"resolver method must be 'sequential' or 'union' (got {value!r})")
        return value


# etcd_transport auto: the JSON gateway for a connection serving at most this many services
# (a watch is a connection of its own there), gRPC's one stream beyond.
ETCD_JSON_MAX_SERVICES = 8


def etcd_key(discovery: DiscoveryConfig) -> tuple[Any, ...]:
    """What an etcd connection is shared by: endpoints and identity."""
    endpoints = sorted(discovery.etcd_endpoint_list())
    return (*endpoints, discovery.etcd_user, discovery.etcd_password, discovery.etcd_tls)


def etcd_discoveries(discoveries: Iterable[DiscoveryConfig]) -> list[DiscoveryConfig]:
    """The etcd blocks among ``discoveries`` (a multi's children too)."""
    found: list[DiscoveryConfig] = []
    pending = list(discoveries)
    while pending:
        discovery = pending.pop()
        if discovery.method == "etcd":
            found.append(discovery)
        pending.extend((discovery.watchers or {}).values())
    return found


def etcd_transport(discovery: DiscoveryConfig, config: Iterable[DiscoveryConfig]) -> str:
    """``discovery``'s ``etcd_transport``, "auto" decided by the services of ``config``
    (every service's discovery block) sharing its connection: the JSON gateway for a few."""
    if discovery.etcd_transport != "auto":
        return discovery.etcd_transport
    key = etcd_key(discovery)
    served = sum(etcd_key(d) == key for d in etcd_discoveries(config))
    # etcd's gateway calls etcd back with etcd's own server certificate: with client
    # certificates required, that works only if it also allows clientAuth.
    client_cert = discovery.etcd_tls is not None and discovery.etcd_tls.cert_cert
    return "json" if served <= ETCD_JSON_MAX_SERVICES and not client_cert else "grpc"


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
    # ours: how synapse talks to etcd. json: its HTTP gateway, no gRPC loaded (a connection
    # per watch); grpc: one stream for every watch; auto: json when the connection (same
    # endpoints and identity) serves at most ETCD_JSON_MAX_SERVICES services at start
    etcd_transport: Literal["auto", "grpc", "json"] = "auto"
    # dns / docker
    servers: list[ServerEntry] | None = None
    nameserver: str | None = None
    check_interval: float | None = Field(default=None, gt=0)
    image_name: str | None = None
    container_port: int | None = Field(default=None, ge=1, le=65535)
    label_selector: dict[str, str] | None = None  # ours (docker): match container labels
    # zookeeper: where the service's generator (haproxy/file_output) settings are read:
    # None = the data of ``path`` (Airbnb's default), "disabled" = nowhere, else a znode
    generator_config_path: str | None = None
    # multi: named child discovery blocks and how their servers combine
    watchers: dict[str, DiscoveryConfig] | None = None
    resolver: ResolverConfig | None = None
    # ours: random delay before a watcher starts, to spread a fleet restart
    start_jitter: float = Field(default=0.0, ge=0)
    # ours (zookeeper, etcd): random delay before listing again after the connection came back,
    # to spread a fleet's re-lists when the registry returns; grows with the fleet
    relist_jitter: float = Field(default=2.0, ge=0, le=3600)

    @model_validator(mode="before")
    @classmethod
    def _singular_label_filter(cls, value: object) -> object:
        # Airbnb's deprecated ``label_filter`` (one filter or a list) joins ``label_filters``
        # as in Ruby; the loader warns (synapse.config_legacy.singular_filter_warnings).
        if not isinstance(value, dict) or "label_filter" not in value:
            return value
        value = dict(value)
        singular = value.pop("label_filter")
        extra = singular if isinstance(singular, list) else [singular]
        filters = value.get("label_filters")
        # (null adds nothing, Ruby's compact; label_filters of another shape: its own error)
        if singular is not None and (filters is None or isinstance(filters, list)):
            value["label_filters"] = [*(filters or []), *extra]
        return value

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
            "zookeeper_dns": ("hosts", "path"),
            "dns": ("servers",),
            "docker": ("servers",),
        }
        for key in needs.get(self.method, ()):
            if not getattr(self, key):
                raise ValueError(f"discovery method {self.method} needs {key!r}")
        if self.method.startswith("zookeeper"):
            check_zk_hosts(self.hosts or [], "hosts")  # (kazoo's parser fails only once running)
        if self.method == "etcd":
            if not (self.host or self.endpoints):
                raise ValueError("discovery method etcd needs 'host' or 'endpoints'")
            if not self.path:
                raise ValueError("discovery method etcd needs 'path'")
            if self.endpoints:
                check_etcd_endpoints(self.endpoints, "endpoints")
            else:
                check_etcd_host(self.host or "", "host")
            check_etcd_security(
                self.etcd_endpoint_list(), self.etcd_user, self.etcd_password, self.etcd_tls
            )
        if self.method == "multi":
            self._check_multi()
        self._check_values()
        if self.path is not None and not self.path.startswith("/"):
            raise ValueError(f"path must start with '/' (got {self.path!r})")
        return self

    def _check_values(self) -> None:
        """What passed -k and failed once running: a dns name that never resolves, a
        ZooKeeper path kazoo refuses (a watcher crash loop) or misreads."""
        if self.method == "dns":  # (docker's servers are engines: URLs, sockets)
            for index, entry in enumerate(self.servers or []):
                if problem := host_problem(entry.host, resolved=True):
                    raise ValueError(f"servers[{index}].host {problem}")
        zookeeper = self.method.startswith("zookeeper")
        if zookeeper and self.path is not None and (problem := zk_path_problem(self.path)):
            raise ValueError(f"path: {problem}")

    def _check_multi(self) -> None:
        if not self.watchers:
            raise ValueError("discovery method multi needs 'watchers' (name -> discovery block)")
        if self.resolver is None:
            raise ValueError("discovery method multi needs 'resolver' ({method: sequential|union})")
        if self.resolver.method == "sequential":
            order = self.resolver.sequential_order
            if not order:
                raise ValueError("resolver sequential needs 'sequential_order' (watcher names)")
            missing = sorted(set(self.watchers) - set(order))
            unknown = sorted(set(order) - set(self.watchers))
            if missing:
                raise ValueError(f"resolver sequential_order does not contain: {missing}")
            if unknown:
                raise ValueError(f"resolver sequential_order has unknown watchers: {unknown}")

    def etcd_endpoint_list(self) -> list[str]:
        if self.endpoints:
            return list(self.endpoints)
        return [join_host_port(self.host or "", self.port)]
