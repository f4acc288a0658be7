"""A fleet-wide port move (config management SIGHUPs every instance's nerve at once with
the service's new port, the app answering on both ports meanwhile) never empties the
service: each nerve keeps its old registration, still vouched for by its checks at the
old address, until the new address has passed `rise` checks and is registered. Before,
the old one was withdrawn first: for `rise` intervals no instance was registered and a
synapse with `use_previous_backends: false` served an empty backend (every request 503).

Real ZooKeeper, 3 real nerve processes, real HTTP backends on both ports, a real synapse
and HAProxy, bounded load (50 req/s)."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

from kazoo.client import KazooClient
from nerve_testlib import children, nerve_config, unique_path, until, write_config
from nerve_testlib import zk_service as nerve_zk_service
from synapse_e2e import Load, Synapse, wait_serving
from synapse_e2e import zk_service as synapse_zk_service

from testbed.process import free_port
from testbed.zookeeper import ZooKeeperServer

INSTANCES = ("i-1", "i-2", "i-3")
CHECK = {"type": "http", "uri": "/health", "timeout": 1.0, "rise": 3, "fall": 2}
INTERVAL = 0.5  # rise 3: a new address is registered ~1.5 s after the SIGHUP at best


def ports(kz: KazooClient, path: str) -> list[int]:
    """The ports the registry holds for the service (one per record)."""
    found = []
    for child in children(kz, path):
        data, _ = kz.get(f"{path}/{child}")
        found.append(json.loads(data)["port"])
    return sorted(found)


async def test_a_fleet_wide_port_move_keeps_every_request_served(
    zk: ZooKeeperServer, kz: KazooClient, http_backend_factory, tmp_path: Path, nerve_process
) -> None:
    """With ``use_previous_backends: false``: an emptied list is served as such (503s).
    (Before: 26-53 of ~220 requests failed, 0.5-1.1 s; review s37, run_repro.sh.)"""
    old = {i: http_backend_factory(i) for i in INSTANCES}
    new = {i: http_backend_factory(i) for i in INSTANCES}  # the app on its new port too
    path, haproxy_port = unique_path(), free_port()
    configs, nerves = {}, {}
    for i in INSTANCES:
        service = nerve_zk_service(zk.hosts, path, old[i].port, check_interval=INTERVAL,
                                   checks=[CHECK])  # fmt: skip
        configs[i] = nerve_config({"web": service}, instance_id=i)
        nerves[i] = nerve_process(write_config(tmp_path / f"{i}.json", configs[i]))
    await until(lambda: len(children(kz, path)) == 3, what="three registrations")
    syn_service = synapse_zk_service(zk, path, haproxy_port)
    syn_service["use_previous_backends"] = False
    with Synapse({"web": syn_service}) as syn:
        wait_serving(haproxy_port, set(INSTANCES))
        with Load(haproxy_port, seconds=40, rate=50) as load:
            time.sleep(1.0)
            for i in INSTANCES:  # the fleet-wide push: every nerve at once
                configs[i]["services"]["web"]["port"] = new[i].port
                write_config(tmp_path / f"{i}.json", configs[i])
            for i in INSTANCES:
                nerves[i].signal(signal.SIGHUP)
            moved = sorted(b.port for b in new.values())
            await until(lambda: ports(kz, path) == moved, what="the new ports alone")
            time.sleep(1.5)  # synapse applies the last list
        wait_serving(haproxy_port, set(INSTANCES))
    # (both ports answer throughout: the only failures are the registry's gaps)
    total = load.ok + len(load.failures)
    assert load.ok > 100, syn.log()
    assert not load.failures, f"{len(load.failures)} of {total} failed: {load.failures[:3]}"
    for nerve in nerves.values():
        assert "event=address_move_done service=web outcome=written" in nerve.log()
