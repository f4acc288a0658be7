"""Which watcher class serves which discovery method, and ``create_watcher``.

A module of its own so that a watcher that builds other watchers (``multi``) looks them up
here without importing the package that imports it.
"""

from __future__ import annotations

import importlib

from synapse.config import ServiceConfig
from synapse.model import Sink
from synapse.watchers.base import Watcher, WatcherContext
from synapse.watchers.static import UnsupportedWatcher

# method -> "module:class". Imported when a service uses the method: the etcd watcher
# pulls in gRPC and aetcd (~20 MB of RSS), which a ZooKeeper sidecar should not carry.
WATCHERS: dict[str, str] = {
    "base": "synapse.watchers.static:BaseWatcher",
    "zookeeper": "synapse.watchers.zookeeper:ZooKeeperWatcher",
    "zookeeper_poll": "synapse.watchers.zookeeper_poll:ZooKeeperPollWatcher",
    "zookeeper_dns": "synapse.watchers.zookeeper_dns:ZooKeeperDnsWatcher",
    "etcd": "synapse.watchers.etcd:EtcdWatcher",
    "dns": "synapse.watchers.dns:DnsWatcher",
    "docker": "synapse.watchers.docker:DockerWatcher",
    "multi": "synapse.watchers.multi:MultiWatcher",
}


def watcher_class(method: str) -> type[Watcher]:
    """The watcher class of a discovery method (UnsupportedWatcher when we have none)."""
    target = WATCHERS.get(method)
    if target is None:
        return UnsupportedWatcher
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def create_watcher(service: str, config: ServiceConfig, sink: Sink, ctx: WatcherContext) -> Watcher:
    """The watcher for the service's discovery method (UnsupportedWatcher when we have none)."""
    return watcher_class(config.discovery.method)(service, config, sink, ctx)
