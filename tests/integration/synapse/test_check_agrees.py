"""`synapse -k` says what the daemon then does with the registry's servers: real
ZooKeeper, synapse with a managed HAProxy, HTTP backends.

-k rendered only default servers: a service without them (the usual case) had no server
line in the check, so a typo in its `server_options` passed -k, and on a fresh host the
daemon left the service out of HAProxy (every request refused). Now -k renders a
placeholder server made as a discovered one is; the cases below that must pass
(port override, nerve weights, leader election, zone routing) pass both.
"""

from __future__ import annotations

import copy
import subprocess
from typing import Any

import pytest
from kazoo.client import KazooClient
from synapse_e2e import SYNAPSE, Synapse, nerve_record, spread, wait_serving

from testbed.process import free_port
from testbed.zookeeper import ZooKeeperServer

WEIGHTS = {"use_nerve_weights": True}  # (the record's weight replaces the options')
CASES: dict[str, tuple[str | None, dict[str, Any], bool]] = {
    # (the local zone, the service's keys besides discovery, whether it runs)
    "typo": (None, {"haproxy": {"server_options": "check inter 2s fall2"}}, False),
    "port_override": (None, {"haproxy": {"server_options": "check port %{port}"}}, True),
    "nerve_weights": (None, {"haproxy": {"server_options": "weight 999", **WEIGHTS}}, True),
    "leader": (None, {"leader_election": True, "haproxy": {"server_options": "check"}}, True),
    "zones": ("az1", {"zone_routing": {"zones": ["az1", "az2"], "sticky": "Z"}}, True),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_check_and_daemon_agree(
    zk: ZooKeeperServer, writer: KazooClient, http_backend_factory, case: str
) -> None:
    zone, keys, runs = copy.deepcopy(CASES[case])
    backend = http_backend_factory(f"b-{case}")
    path = f"/agree/{case}"
    writer.ensure_path(path)
    # registered on another port: the override (where a case sets it) sends traffic home
    port = free_port() if case == "port_override" else backend.port
    record = nerve_record(backend, weight=10, labels={"zone": "az1"}, port=port)
    writer.create(f"{path}/b_", record, sequence=True)  # (a sequence: leader_election)
    if case == "port_override":
        keys["haproxy"]["server_port_override"] = backend.port
    web_port = free_port()
    hap = {"port": web_port, "bind_address": "127.0.0.1", **keys.pop("haproxy", {})}
    discovery = {"method": "zookeeper", "hosts": [zk.hosts], "path": path}
    syn = Synapse({"web": {"discovery": discovery, "haproxy": hap, **keys}}, zone=zone)
    check = subprocess.run([str(SYNAPSE), "-c", str(syn.config_path), "-k"],
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    assert (check.returncode == 0) is runs, check.stdout + check.stderr
    with syn:
        isolated = syn.status()["haproxy"]["isolated_services"]
        if runs:
            wait_serving(web_port, {backend.name})
            assert not isolated
        else:  # what -k now refuses: the daemon leaves the service out
            assert isolated["web"]["running"].endswith("(never valid)")
            assert spread(web_port, 6) == {"error": 6}
