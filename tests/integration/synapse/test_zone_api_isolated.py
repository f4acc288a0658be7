"""`synapse zone evacuate` and `restore` while another service is isolated: real ZooKeeper,
synapse with a managed HAProxy, HTTP backends in two zones.

While any service is isolated (its block refused by haproxy -c) every runtime-only apply
reports INVALID (/status, metrics, /health keep saying so). The evacuation read that as
"HAProxy refused the weights": 503, undone, traffic kept going to the zone the operator
was moving it off. Its `set weight` commands went through: it must answer 200.
"""

from __future__ import annotations

import subprocess
from urllib.error import HTTPError

import pytest
from kazoo.client import KazooClient
from synapse_e2e import SYNAPSE, Synapse, nerve_record, wait, wait_serving, zk_putter

from testbed.process import free_port
from testbed.zookeeper import ZooKeeperServer


def zone_cli(syn: Synapse, action: str, zone: str) -> subprocess.CompletedProcess[str]:
    admin = f"http://127.0.0.1:{syn.admin_port}"
    command = [str(SYNAPSE), "zone", action, zone, "--admin", admin]
    return subprocess.run(command, capture_output=True, text=True, timeout=30)


def test_evacuation_goes_through_while_another_service_is_isolated(
    zk: ZooKeeperServer, writer: KazooClient, http_backend_factory
) -> None:
    az1, az2 = http_backend_factory("az1-0"), http_backend_factory("az2-0")
    put_api, put_web = zk_putter(writer, "/isolated/api"), zk_putter(writer, "/isolated/web")
    for backend, zone in ((az1, "az1"), (az2, "az2")):
        put_api(backend.name, nerve_record(backend, labels={"zone": zone}))
    put_web("w", nerve_record(az2, "w"))
    api_port, web_port = free_port(), free_port()

    def service(path: str, port: int, **extra: object) -> dict[str, object]:
        discovery = {"method": "zookeeper", "hosts": [zk.hosts], "path": path}
        haproxy = {"port": port, "bind_address": "127.0.0.1", **extra.pop("haproxy", {})}
        return {"discovery": discovery, "haproxy": haproxy, **extra}

    services = {
        "api": service("/isolated/api", api_port, zone_routing={"zones": ["az1", "az2"]}),
        # a typo in the server options: haproxy -c refuses web's block, web is isolated
        "web": service("/isolated/web", web_port, haproxy={"server_options": "check fall2"}),
    }
    with Synapse(services, zone="az1") as syn:
        wait(lambda: "web" in syn.status()["haproxy"]["isolated_services"], what="isolated")
        wait_serving(api_port, {"az1-0"})
        workers = syn.workers()

        done = zone_cli(syn, "evacuate", "az1")
        assert done.returncode == 0, done.stdout + done.stderr  # before: 503, nothing changed
        wait_serving(api_port, {"az2-0"}, timeout=5)
        assert syn.status()["services"]["api"]["zones"]["evacuated"] == ["az1"]
        assert syn.admin("/zones").count("az1") == 1

        # What else reads the apply's outcome says what it said before: web is refused.
        with pytest.raises(HTTPError) as health:
            syn.admin("/health")
        assert health.value.code == 503
        assert syn.status()["reconciler"]["last_apply"]["haproxy"] == "invalid"
        assert list(syn.status()["haproxy"]["isolated_services"]) == ["web"]

        done = zone_cli(syn, "restore", "az1")
        assert done.returncode == 0, done.stdout + done.stderr
        wait_serving(api_port, {"az1-0"}, timeout=5)
        assert syn.workers() == workers, "weights at runtime: no reload"
