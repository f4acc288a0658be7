"""Pacing (synapse.pacing) with real etcd and HAProxy: a stream of registry writes is
handed over in a few paced rounds, and a lone change after it goes at once."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from synapse_e2e import Synapse, wait

from testbed.etcd import EtcdCluster
from testbed.process import free_port

SERVICES, PER_SERVICE = 5, 40  # 200 writes, all in flight at once


async def burst(cluster: EtcdCluster, keys: list[tuple[str, int]]) -> None:
    import aetcd  # only the etcd tests need it

    client = aetcd.Client(host=cluster.host, port=cluster.port,
                          options={"grpc.use_local_subchannel_pool": 1})  # fmt: skip
    try:
        await asyncio.gather(*(
            client.put(key.encode(), json.dumps({"host": "127.0.0.1", "port": port}).encode())
            for key, port in keys
        ))  # fmt: skip
    finally:
        await client.close()


def servers(syn: Synapse) -> dict[str, int]:
    return {name: len(s["servers"]) for name, s in syn.status()["services"].items()}


def test_a_stream_of_etcd_writes_is_paced_and_a_lone_change_is_not(tmp_path: Path):
    cluster = EtcdCluster(size=1, workdir=tmp_path / "etcd").start()
    services = {
        f"s{i}": {
            "discovery": {"method": "etcd", "endpoints": cluster.endpoints, "path": f"/pace/s{i}"},
            "haproxy": {"port": free_port(), "bind_address": "127.0.0.1"},
        }
        for i in range(SERVICES)
    }
    keys = [(f"/pace/s{i}/n{j}", 20000 + j) for i in range(SERVICES) for j in range(PER_SERVICE)]
    try:
        with Synapse(services, haproxy={"coalesce_ms": 0}) as syn:
            before = syn.status()["reconciler"]
            assert before["paced_rounds"] == 0
            asyncio.run(burst(cluster, keys))
            wait(lambda: set(servers(syn).values()) == {PER_SERVICE}, what="every server")
            after = syn.status()["reconciler"]
            assert after["paced_rounds"] >= 1, after
            assert after["applies"] - before["applies"] < len(keys) / 2, after
            # Quiet again: a lone change is not paced.
            asyncio.run(burst(cluster, [("/pace/s0/lone", 30000)]))
            wait(lambda: servers(syn)["s0"] == PER_SERVICE + 1, what="the lone change")
            assert syn.status()["reconciler"]["paced_rounds"] == after["paced_rounds"]
    finally:
        cluster.stop()
