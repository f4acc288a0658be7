"""Which etcd connection a service gets (synapse.etcd_connections): one per endpoints
and identity, its transport decided once (etcd_transport auto) and kept when a reload adds
services beyond what would have chosen gRPC at a start."""

from __future__ import annotations

from smartstack.etcd_json import EtcdJsonConnection
from synapse.config import SynapseConfig
from synapse.daemon import SynapseDaemon


def config(count: int, **discovery) -> SynapseConfig:
    base = {"method": "etcd", "endpoints": ["127.0.0.1:2379"], **discovery}
    services = {f"s{i}": {"discovery": {**base, "path": f"/s/{i}"}} for i in range(count)}
    return SynapseConfig.model_validate({"services": services, "admin": {"port": None}})


def discovery(cfg: SynapseConfig, name: str):
    return cfg.services[name].discovery


def test_a_connection_keeps_its_transport_when_a_reload_adds_services() -> None:
    daemon = SynapseDaemon(config(8))
    first = daemon._etcd.connection(discovery(daemon.config, "s0"))
    assert isinstance(first, EtcdJsonConnection)
    assert daemon._etcd.connection(discovery(daemon.config, "s7")) is first
    daemon.config = config(12)  # a reload: 12 would be gRPC at a start
    assert daemon._etcd.connection(discovery(daemon.config, "s11")) is first
    assert len(daemon._etcd) == 1


def test_many_services_share_one_grpc_connection() -> None:
    daemon = SynapseDaemon(config(9))
    first = daemon._etcd.connection(discovery(daemon.config, "s0"))
    assert first.transport == "grpc"
    assert daemon._etcd.connection(discovery(daemon.config, "s8")) is first
    # Said in the config, a transport is its own connection.
    json = config(1, etcd_transport="json")
    assert daemon._etcd.connection(discovery(json, "s0")).transport == "json"
    assert len(daemon._etcd) == 2
