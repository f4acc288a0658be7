"""Records Ruby nerve writes, through a real ZooKeeper, synapse and HAProxy: a fleet whose
nerve configs say ``weight: 500`` (Ruby nerve takes any non-negative integer) and labels
with null or list values is served, not refused (a 503 on every request before)."""

from __future__ import annotations

from kazoo.client import KazooClient
from synapse_e2e import Synapse, nerve_record, wait, wait_serving

from testbed.process import free_port
from testbed.zookeeper import ZooKeeperServer


def server_lines(config: str) -> list[str]:
    return [line.strip() for line in config.splitlines() if line.strip().startswith("server ")]


def test_a_fleet_with_weight_500_is_served(
    zk: ZooKeeperServer, writer: KazooClient, http_backend_factory
) -> None:
    heavy, other = http_backend_factory("heavy"), http_backend_factory("labelled")
    path = "/ruby_nerve/web/services"
    labels = {"az": "a", "owner": None, "roles": ["api", "web"]}
    for backend, extra in ((heavy, {}), (other, {"labels": labels})):
        # as Ruby nerve registers: an ephemeral sequential <instance_id>_ node
        writer.create(f"{path}/{backend.name}_", nerve_record(backend, weight=500, **extra),
                      ephemeral=True, sequence=True, makepath=True)  # fmt: skip
    discovery = {"method": "zookeeper", "hosts": [zk.hosts], "path": path}
    plain, weighted = free_port(), free_port()
    services = {
        "web": {"discovery": discovery, "haproxy": {"port": plain}},
        "web_weighted": {
            "discovery": discovery,
            "haproxy": {"port": weighted, "use_nerve_weights": True},
        },
    }
    with Synapse(services) as syn:
        wait_serving(plain, {"heavy", "labelled"})
        wait_serving(weighted, {"heavy", "labelled"})
        lines = server_lines(syn.haproxy_config())
        heavy_lines = [line for line in lines if line.startswith("server heavy_")]
        assert len(heavy_lines) == 2, lines
        # use_nerve_weights: HAProxy's largest weight (500 would fail `haproxy -c`)
        assert sum(" weight 256" in line for line in heavy_lines) == 1, heavy_lines
        assert not any(" weight 500" in line for line in lines), lines
        log = wait(
            lambda: (text := syn.log(400)).count("record_field_ignored") >= 3 and text,
            what=f"the notes in the log\n{syn.log()}",
        )
        assert "weight 500 is above 256" in log
        assert "label 'owner' is null: dropped" in log
        assert "event=bad_record" not in log
