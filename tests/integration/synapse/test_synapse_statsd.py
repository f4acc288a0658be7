"""statsd: a real synapse (managed HAProxy, ZooKeeper) with Airbnb's ``statsd`` block sends
reconciliations, HAProxy reloads and runtime updates, and watcher events to a real UDP
listener on 127.0.0.1, every name under the configured prefix."""

from __future__ import annotations

from kazoo.client import KazooClient
from synapse_e2e import Synapse, nerve_record, wait_serving

from testbed.process import free_port
from testbed.statsd import StatsdListener
from testbed.zookeeper import ZooKeeperServer


def test_synapse_sends_reconciliations_reloads_runtime_updates_and_watcher_events(
    zk: ZooKeeperServer, writer: KazooClient, http_backend_factory
) -> None:
    a, b = http_backend_factory("a"), http_backend_factory("b")
    path = "/statsd/web"
    writer.create(f"{path}/a_", nerve_record(a), sequence=True, makepath=True)
    port = free_port()
    service = {
        "discovery": {"method": "zookeeper", "hosts": [zk.hosts], "path": path},
        "haproxy": {"port": port, "bind_address": "127.0.0.1"},
    }
    with StatsdListener() as sink:
        statsd = {"host": "127.0.0.1", "port": sink.port, "prefix": "smk"}
        with Synapse({"web": service}, statsd=statsd):
            wait_serving(port, {"a"})
            writer.create(f"{path}/b_", nerve_record(b), sequence=True, makepath=True)
            wait_serving(port, {"a", "b"})  # a new server: added at runtime
            sink.wait_for(
                "smk.synapse.reconcile",
                "smk.synapse.reconcile.duration",
                "smk.synapse.haproxy.reload.done",  # the first start of the managed HAProxy
                "smk.synapse.haproxy.runtime_update",
                "smk.synapse.watcher.zookeeper.web.connected",
                "smk.synapse.watcher.zookeeper.web.event",
            )
    lines = sink.lines()
    assert all(line.startswith("smk.synapse.") for line in lines), lines[:5]
    assert any(x.startswith("smk.synapse.reconcile.duration:") and x.endswith("|ms") for x in lines)
