"""synapse's model: what watchers report, and what synapse wants HAProxy to run.

Watchers hand the reconciler a ``Report`` (through a ``Sink``): the full list of what
they ``Found`` in the registry. The reconciler turns reports into ``DesiredService``
objects; the HAProxy side (``synapse.haproxy``, behind ``synapse.contract.Applier``)
makes HAProxy match them, at runtime when it can.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from smartstack.record import Registration
from smartstack.strings import share
from synapse.config import ServiceConfig

_UNSAFE_SERVER_NAME = re.compile(r"[^A-Za-z0-9_.:-]")


class Found(NamedTuple):
    """One registration and where it was read (``zookeeper:/path/child``, ``etcd:key``, ...).

    A NamedTuple (immutable, one per record at every report): built ~3x faster than a
    frozen dataclass, and a report's tuple of them compares in C.
    """

    registration: Registration
    origin: str
    # creation order in the registry (ZooKeeper: the child's sequence suffix; etcd: the
    # key's create revision); None when unknown. Read by leader_election.
    sequence: int | None = None


@dataclass(frozen=True)
class Report:
    """A watcher's complete view of its service at one moment."""

    service: str
    method: str
    found: tuple[Found, ...]
    skipped: int = 0  # records present in the registry but refused as invalid
    event_time: float = field(default_factory=time.monotonic)  # when the change was seen
    # generator settings read from the registry (synapse/generator_config.py); {}: none
    generator_config: Mapping[str, Any] = field(default_factory=dict)
    # Some of the watcher's sources have not answered yet (a ``multi`` union's child): the
    # servers listed are there, the others the service had may be too (reload_diff.Holds)
    partial: bool = False
    # The label_filters of the discovery the sending watcher was made from (set on its way
    # by synapse.watcher_swap); None: the service config's. (Not compared: a config's.)
    filters: Sequence[Any] | None = field(default=None, compare=False)


Sink = Callable[[Report], None]


def server_name(host: str, port: int, name: str | None) -> str:
    """Airbnb synapse's server name, stable across reloads: ``[name_]host:port``.

    The same as the Ruby synapse, so cookie values (``cookie_value_method: name``) and
    server-state files stay valid when a fleet migrates.
    """
    base = f"{host}:{port}" if not name else f"{name}_{host}:{port}"
    # shared: the config text's and HAProxy's running state's copies are this string too
    return share(_UNSAFE_SERVER_NAME.sub("_", base))


@dataclass(frozen=True, slots=True)
class Server:
    """One server line of a backend."""

    name: str  # stable HAProxy server name (server_name())
    host: str
    port: int
    weight: int | None = None  # only set when the service uses nerve weights
    registry_options: str = ""  # whitelisted haproxy_server_options from the record
    origin: str = ""  # where it came from: "zookeeper:/path/child", "default", ...
    labels: tuple[tuple[str, str], ...] = ()
    # zone routing: a server of another zone than synapse's, used by HAProxy only when no
    # server of the local zone is (synapse.zone_apply: HAProxy fails over by itself)
    backup: bool = False
    # a DNS-named host's address as synapse looked it up (synapse.haproxy.dns_addresses;
    # "": none): HAProxy is told it rather than resolving the name itself
    address: str = ""

    @classmethod
    def from_registration(
        cls,
        reg: Registration,
        origin: str,
        port_override: int | None = None,
        use_weight: bool = False,
        registry_options: str = "",
    ) -> Server:
        port = port_override or reg.port
        return cls(  # positional (one per record at a start): name, host, port, weight, ...
            server_name(reg.host, port, reg.name),
            reg.host,
            port,
            reg.weight if use_weight else None,
            registry_options,
            origin,
            tuple(sorted(reg.labels.items())) if reg.labels else (),
        )


@dataclass
class DesiredService:
    """A service as HAProxy should run it: its config block and its current servers."""

    name: str
    config: ServiceConfig
    servers: list[Server] = field(default_factory=list)
    # zone routing with sticky/header/zone_of_address: the zones whose backend
    # (<backend>_zone_<zone>) its frontend may pick (synapse.zone_backends)
    zones: tuple[str, ...] = ()

    @property
    def backend_name(self) -> str:
        return self.config.haproxy.backend_name or self.name
