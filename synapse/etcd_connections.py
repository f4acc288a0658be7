"""synapse's etcd connections: one per endpoint list, identity and transport, shared by the
services that name them. ``auto`` is decided once per connection: a reload's services join
the one open rather than load gRPC for a ninth service (synapse/discovery_config.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Union

from synapse.discovery_config import DiscoveryConfig, etcd_key, etcd_transport

if TYPE_CHECKING:
    from smartstack.etcd import EtcdConnection
    from smartstack.etcd_json import EtcdJsonConnection

Connection = Union["EtcdConnection", "EtcdJsonConnection"]


class EtcdConnections(dict[tuple[Any, ...], Any]):
    """{(endpoints, identity, transport): connection}; ``discoveries`` gives every
    service's discovery block of the running config (what ``auto`` counts)."""

    def __init__(self, discoveries: Callable[[], Iterable[DiscoveryConfig]]) -> None:
        super().__init__()
        self._discoveries = discoveries

    def connection(self, discovery: DiscoveryConfig) -> Connection:
        key = etcd_key(discovery)
        if discovery.etcd_transport == "auto":
            opened = [k for k in self if k[:-1] == key]
            if opened:
                return self[opened[0]]
        transport = etcd_transport(discovery, self._discoveries())
        key += (transport,)
        if key not in self:
            # Imported here: gRPC and aetcd cost ~17 MB of RSS, only their users pay it.
            if transport == "json":
                from smartstack.etcd_json import EtcdJsonConnection as Opened
            else:
                from smartstack.etcd import EtcdConnection as Opened
            d = discovery
            self[key] = Opened(d.etcd_endpoint_list(), d.etcd_user, d.etcd_password,
                               tls=d.etcd_tls)  # fmt: skip
        return self[key]
