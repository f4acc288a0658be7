"""A synapse restarted while ZooKeeper is down, with no state file, keeps HAProxy serving.

The previous synapse left its managed HAProxy running with its servers; the state file is
gone (an older synapse never wrote one, tmpfs, deleted). The new synapse adopts HAProxy,
its registry does not answer, the state file has nothing: it keeps the servers HAProxy
runs (``synapse.adopted_servers``) instead of emptying the backend, and follows ZooKeeper
once it is back. Real synapse processes, a managed HAProxy 2.6 and ZooKeeper, on loopback.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

from kazoo.client import KazooClient
from synapse_e2e import Load, Synapse, nerve_record, wait, wait_serving

from testbed.process import free_port
from testbed.zookeeper import ZooKeeperServer

PATH = "/restart-down/web"


def connect(zk: ZooKeeperServer) -> KazooClient:
    client = KazooClient(hosts=zk.hosts)
    client.start(timeout=30)
    return client


def test_a_restart_without_registry_nor_state_file_keeps_haproxy_serving(
    tmp_path: Path, http_backend_factory
) -> None:
    zk = ZooKeeperServer(workdir=tmp_path / "zk").start()
    a, b, c = (http_backend_factory(name) for name in "abc")
    writer = connect(zk)
    nodes = {s.name: writer.create(f"{PATH}/{s.name}_", nerve_record(s), sequence=True,
                                   makepath=True) for s in (a, b)}  # fmt: skip
    writer.stop()
    port = free_port()
    discovery = {"method": "zookeeper", "hosts": [zk.hosts], "path": PATH}
    syn = Synapse({"web": {"discovery": discovery,
                           "haproxy": {"port": port, "bind_address": "127.0.0.1"}}})  # fmt: skip
    syn.config["haproxy"]["managed"]["stop_on_exit"] = False  # HAProxy outlives synapse 1
    syn.write_config()
    try:
        syn.start()
        wait_serving(port, {"a", "b"})
        syn.signal(signal.SIGTERM)
        assert syn.process.wait(15) == 0
        state = syn.dir / "haproxy.synapse-state.json"
        state.unlink()  # (the default state file: as if an older synapse, or tmpfs)
        zk.stop()
        with Load(port, limit=20000, seconds=60) as load:
            syn.start(timeout=60)
            time.sleep(3)  # requests after the first apply, and after its reload
        assert load.ok > 20, "the load must have run through the restart"
        assert load.failures == [], f"{len(load.failures)} failed: {load.failures[:3]}"
        assert "startup_servers_from_haproxy" in syn.process.log_path.read_text()
        web = syn.status()["services"]["web"]
        assert web["origin"] == "haproxy"
        assert sorted(s["name"] for s in web["servers"]) == sorted(
            f"{s.name}_127.0.0.1:{s.port}" for s in (a, b)
        )
        zk.start()  # back, with b gone and c there: HAProxy follows the registry
        writer = connect(zk)
        writer.delete(nodes["b"])
        writer.create(f"{PATH}/c_", nerve_record(c), sequence=True)
        writer.stop()
        wait_serving(port, {"a", "c"}, timeout=60)
        wait(lambda: syn.status()["services"]["web"]["origin"] == "discovery", 10)
    finally:
        syn.cleanup()  # (and the HAProxy it left running)
        zk.stop()
