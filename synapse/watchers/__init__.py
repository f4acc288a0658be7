"""Discovery watchers, one module per method, all feeding the reconciler (see base.py)."""

from __future__ import annotations

from synapse.watchers.base import Watcher, WatcherContext
from synapse.watchers.dns import DnsWatcher
from synapse.watchers.docker import DockerWatcher
from synapse.watchers.etcd import EtcdWatcher
from synapse.watchers.multi import MultiWatcher
from synapse.watchers.registry import UNSUPPORTED, WATCHERS, create_watcher
from synapse.watchers.static import BaseWatcher, UnsupportedWatcher
from synapse.watchers.zookeeper import ZooKeeperPollWatcher, ZooKeeperWatcher
from synapse.watchers.zookeeper_dns import ZooKeeperDnsWatcher

WATCHERS.update(
    {
        "base": BaseWatcher,
        "zookeeper": ZooKeeperWatcher,
        "zookeeper_poll": ZooKeeperPollWatcher,
        "zookeeper_dns": ZooKeeperDnsWatcher,
        "etcd": EtcdWatcher,
        "dns": DnsWatcher,
        "docker": DockerWatcher,
        "multi": MultiWatcher,
        UNSUPPORTED: UnsupportedWatcher,
    }
)

__all__ = ["Watcher", "WatcherContext", "create_watcher"]
