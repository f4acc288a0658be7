"""A synapse restarted while ZooKeeper is down keeps HAProxy serving what it should.

The previous synapse left its managed HAProxy running with its servers. With no state file
(an older synapse never wrote one, tmpfs, deleted), the new synapse adopts HAProxy, its
registry does not answer, the state file has nothing: it keeps the servers HAProxy runs
(``synapse.adopted_servers``) instead of emptying the backend, and follows ZooKeeper once
it is back. With a state file older than what HAProxy runs (an older synapse ran HAProxy
meanwhile, after a rollback), HAProxy's servers win over the file's. Real synapse
processes, a managed HAProxy 2.6 and ZooKeeper, on loopback.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kazoo.client import KazooClient
from synapse_e2e import Load, Synapse, nerve_record, refused, spread, wait, wait_serving

from testbed.process import free_port
from testbed.zookeeper import ZooKeeperServer

PATH = "/restart-down/web"
STATE = "haproxy.synapse-state.json"  # (the default state file: beside haproxy.cfg)


@pytest.fixture
def own_zk(tmp_path: Path) -> Iterator[ZooKeeperServer]:
    """A ZooKeeper of the test's own: it is stopped and started again."""
    server = ZooKeeperServer(workdir=tmp_path / "zk").start()
    yield server
    server.stop()


def connect(zk: ZooKeeperServer) -> KazooClient:
    client = KazooClient(hosts=zk.hosts)
    client.start(timeout=30)
    return client


def left_serving(
    zk: ZooKeeperServer,
    backends: list,
    port: int,
    filters: tuple = (),
    allow: bool = False,
    **record: Any,
) -> tuple[Synapse, dict]:
    """A synapse served ``backends`` (registered in ZooKeeper, with ``record``'s fields) on
    ``port`` and stopped, leaving HAProxy running; the ZooKeeper nodes by backend name.
    ``filters``: web's ``label_filters``; ``allow``: registry server options allowed."""
    writer = connect(zk)
    nodes = {s.name: writer.create(f"{PATH}/{s.name}_", nerve_record(s, **record), sequence=True,
                                   makepath=True) for s in backends}  # fmt: skip
    writer.stop()
    discovery = {"method": "zookeeper", "hosts": [zk.hosts], "path": PATH}
    if filters:
        discovery["label_filters"] = list(filters)
    syn = Synapse({"web": {"discovery": discovery,
                           "haproxy": {"port": port, "bind_address": "127.0.0.1"}}})  # fmt: skip
    syn.config["haproxy"]["managed"]["stop_on_exit"] = False  # HAProxy outlives synapse 1
    syn.config["haproxy"]["registry_server_options"] = {"allow": allow}
    syn.write_config()
    syn.start()
    wait_serving(port, {s.name for s in backends})
    syn.signal(signal.SIGTERM)
    assert syn.process.wait(15) == 0
    return syn, nodes


def test_a_restart_without_registry_nor_state_file_keeps_haproxy_serving(
    own_zk: ZooKeeperServer, http_backend_factory
) -> None:
    zk = own_zk
    a, b, c = (http_backend_factory(name) for name in "abc")
    port = free_port()
    syn, nodes = left_serving(zk, [a, b], port)
    try:
        (syn.dir / STATE).unlink()  # (as if an older synapse wrote none, or tmpfs)
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


def test_a_state_file_older_than_what_haproxy_runs_gives_way_to_it(
    own_zk: ZooKeeperServer, http_backend_factory
) -> None:
    """After a rollback an older synapse ran HAProxy: a left (its port then answered as
    another service), c came; it never updates the default state file, which still said
    a and b. Restarted with ZooKeeper down, synapse reloaded HAProxy to a and b: 300 of
    600 requests answered by the other service, c dropped. HAProxy's servers win."""
    a, b, c = (http_backend_factory(name) for name in "abc")
    syn, nodes = left_serving(own_zk, [a, b], port := free_port())
    state = syn.dir / STATE
    served = ["b", "c"]  # (a: never)
    try:
        assert f"127.0.0.1:{a.port}" in state.read_text()
        writer = connect(own_zk)  # the older synapse's time: a withdrawn, c registered
        writer.delete(nodes["a"])
        writer.create(f"{PATH}/c_", nerve_record(c), sequence=True)
        writer.stop()
        config = syn.dir / "haproxy.cfg"  # what it made HAProxy run (it knows no marker)
        server_a, server_c = (f"{s.name}_127.0.0.1:{s.port} 127.0.0.1:{s.port}" for s in (a, c))
        config.write_text(config.read_text().replace(server_a, server_c))
        syn.master_command("reload")
        wait_serving(port, {"b", "c"})
        own_zk.stop()

        syn.start(timeout=60)
        answered = spread(port, 60)  # (after the first apply, and the reload it makes)
        time.sleep(2)
        answered += spread(port, 60)
        assert sorted(set(answered)) == served, f"{answered}\n{syn.log(60)}"  # never a, no error
        assert "state_file_behind_haproxy" in syn.process.log_path.read_text()
        kept = {k: v for k, v in json.loads(state.read_text())["web"].items() if not v.get("left")}
        assert sorted(v["name"] for v in kept.values()) == served  # merged, written back

        syn.signal(signal.SIGTERM)  # a reboot: HAProxy gone too, ZooKeeper still down
        assert syn.process.wait(15) == 0
        for pid in syn.haproxy_pids():
            os.kill(pid, signal.SIGKILL)
        wait(lambda: refused(port), 10)
        syn.start(timeout=60)  # (the file's entries were erased: 400 of 400 503s)
        wait_serving(port, set(served), timeout=30)
        assert sorted(set(spread(port, 60))) == served, syn.log(60)
    finally:
        syn.cleanup()


def test_an_upgrade_to_a_new_own_socket_path_keeps_haproxy_serving(
    own_zk: ZooKeeperServer, http_backend_factory
) -> None:
    """An HAProxy an older synapse started has no socket where this release puts synapse's
    own (it moved beside master_socket_path): here its file is gone. With no state file
    and ZooKeeper down, its servers are read through the admin socket the config file
    HAProxy runs declares; they were counted as in maintenance, nothing kept (300 of 300
    requests 503 after an upgrade)."""
    a, b = (http_backend_factory(name) for name in "ab")
    syn, _ = left_serving(own_zk, [a, b], port := free_port())
    try:
        own = syn.dir / "master-synapse.sock"  # (beside haproxy.managed.master_socket_path)
        assert f"stats socket {own} " in (syn.dir / "haproxy.cfg").read_text()
        own.unlink()
        (syn.dir / STATE).unlink()
        own_zk.stop()
        with Load(port, limit=20000, seconds=60) as load:
            syn.start(timeout=60)
            time.sleep(3)  # requests after the first apply (its new HAProxy has the socket)
        assert load.ok > 20, "the load must have run through the restart"
        assert load.failures == [], f"{len(load.failures)} failed: {load.failures[:3]}"
        log = syn.process.log_path.read_text()
        assert "startup_servers_from_haproxy" in log and "startup_haproxy_servers_unread" not in log
        assert syn.status()["services"]["web"]["origin"] == "haproxy"
        assert sorted(set(spread(port, 60))) == ["a", "b"]
    finally:
        syn.cleanup()
