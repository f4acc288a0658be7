"""Discovery watchers, one module per method, all feeding the reconciler (see base.py)."""

from __future__ import annotations

from synapse.config import ServiceConfig
from synapse.model import Sink
from synapse.watchers.base import Watcher, WatcherContext
from synapse.watchers.dns import DnsWatcher
from synapse.watchers.docker import DockerWatcher
from synapse.watchers.etcd import EtcdWatcher
from synapse.watchers.multi import MultiWatcher
from synapse.watchers.static import BaseWatcher, UnsupportedWatcher
from synapse.watchers.zookeeper import ZooKeeperPollWatcher, ZooKeeperWatcher
from synapse.watchers.zookeeper_dns import ZooKeeperDnsWatcher

WATCHERS: dict[str, type[Watcher]] = {
    "base": BaseWatcher,
    "zookeeper": ZooKeeperWatcher,
    "zookeeper_poll": ZooKeeperPollWatcher,
    "zookeeper_dns": ZooKeeperDnsWatcher,
    "etcd": EtcdWatcher,
    "dns": DnsWatcher,
    "docker": DockerWatcher,
    "multi": MultiWatcher,
}

__all__ = ["Watcher", "WatcherContext", "create_watcher"]


def create_watcher(service: str, config: ServiceConfig, sink: Sink, ctx: WatcherContext) -> Watcher:
    """The watcher for the service's discovery method (UnsupportedWatcher when we have none)."""
    cls = WATCHERS.get(config.discovery.method, UnsupportedWatcher)
    return cls(service, config, sink, ctx)
