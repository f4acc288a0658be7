"""What synapse wants HAProxy to run: the contract between watchers and the HAProxy layer.

Watchers and the reconciler produce ``DesiredService`` objects; the HAProxy
layer (``synapse.haproxy``) makes HAProxy match them, at runtime when it can.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from smartstack.record import Registration
from synapse.config import ServiceConfig

_UNSAFE_SERVER_NAME = re.compile(r"[^A-Za-z0-9_.:-]")


def server_name(host: str, port: int, name: str | None) -> str:
    """Airbnb synapse's server name, stable across reloads: ``[name_]host:port``.

    The same as the Ruby synapse, so cookie values (``cookie_value_method: name``) and
    server-state files stay valid when a fleet migrates.
    """
    base = f"{host}:{port}" if not name else f"{name}_{host}:{port}"
    return _UNSAFE_SERVER_NAME.sub("_", base)


@dataclass(frozen=True)
class Server:
    """One server line of a backend."""

    name: str  # stable HAProxy server name (server_name())
    host: str
    port: int
    weight: int | None = None  # only set when the service uses nerve weights
    registry_options: str = ""  # whitelisted haproxy_server_options from the record
    origin: str = ""  # where it came from: "zookeeper:/path/child", "default", ...
    labels: tuple[tuple[str, str], ...] = ()

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
        return cls(
            name=server_name(reg.host, port, reg.name),
            host=reg.host,
            port=port,
            weight=reg.weight if use_weight else None,
            registry_options=registry_options,
            origin=origin,
            labels=tuple(sorted(reg.labels.items())),
        )


@dataclass
class DesiredService:
    """A service as HAProxy should run it: its config block and its current servers."""

    name: str
    config: ServiceConfig
    servers: list[Server] = field(default_factory=list)

    @property
    def backend_name(self) -> str:
        return self.config.haproxy.backend_name or self.name
