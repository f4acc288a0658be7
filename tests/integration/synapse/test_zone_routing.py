"""Smart routing end to end: real ZooKeeper and etcd, synapse with a managed HAProxy 2.6,
real HTTP backends in three zones (2/2/6 servers), shares measured by the backends' own
request counts.

Local zone healthy -> 100 % local; local records deleted -> the two others 50/50 (per
zone, not per server); POST /zones/az2/evacuate -> az3 only; a synapse restart keeps
the evacuation (state file); restore -> 50/50; a brand-new az3 server joins and an az2
server leaves and returns -> still 50/50 per zone; local records back -> 100 % local;
the local zone evacuated and restored through the API.
HAProxy is never reloaded (reload counter and worker PIDs) except by the restart.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kazoo.client import KazooClient
from synapse_e2e import Synapse, etcd_put, http_get, nerve_record, wait, zk_putter

from testbed.etcd import EtcdCluster
from testbed.httpbackend import HttpBackend
from testbed.process import free_port
from testbed.zookeeper import ZooKeeperServer

LAYOUT = {"az1": 2, "az2": 2, "az3": 6}
REQUESTS = 400
TOLERANCE = 0.05

Put = Callable[[str, bytes | None], None]  # (record name, record or None: delete)


def fleet(factory) -> dict[str, list[HttpBackend]]:
    """LAYOUT's servers, and one more in az3 (registered later: a brand-new server)."""
    return {z: [factory(f"{z}-{i}") for i in range(n + (z == "az3"))] for z, n in LAYOUT.items()}


def record(backend: HttpBackend, zone: str) -> bytes:
    return nerve_record(backend, labels={"zone": zone})


def shares(port: int, zones: dict[str, list[HttpBackend]]) -> dict[str, float]:
    """Each zone's share of REQUESTS requests through HAProxy, from the backends' counts."""
    for backends in zones.values():
        for backend in backends:
            backend.requests = 0
    failed = 0
    for _ in range(REQUESTS):
        try:
            status, _ = http_get(port)
        except OSError:
            status = 0
        failed += status != 200
    assert failed == 0, f"{failed} of {REQUESTS} requests failed"
    counts = {z: sum(b.requests for b in backends) for z, backends in zones.items()}
    return {z: n / REQUESTS for z, n in counts.items()}


def wait_split(port: int, zones: dict[str, list[HttpBackend]], target: dict[str, float]) -> None:
    """Until the measured split is within TOLERANCE of ``target`` in every zone."""
    seen: list[dict[str, float]] = []

    def holds() -> bool:
        seen.append(shares(port, zones))
        return all(abs(seen[-1][z] - target.get(z, 0.0)) <= TOLERANCE for z in zones)

    wait(holds, timeout=30, what=f"the split {target} (last measured: {seen[-1:]})")


def post(syn: Synapse, path: str) -> dict[str, Any]:
    request = urllib.request.Request(f"http://127.0.0.1:{syn.admin_port}{path}", method="POST")
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.status == 200
        return json.loads(answer.read())


def reloads(syn: Synapse) -> float:
    """HAProxy reloads done by synapse (its first start not counted)."""
    total = syn.metric("synapse_haproxy_reloads_total")
    starts = syn.metric("synapse_haproxy_reloads_total", reason="start")
    assert starts >= 1, "the counter exists: it counted HAProxy's start"
    return total - starts


def run_scenario(
    discovery: dict[str, Any], put: Put, zones: dict[str, list[HttpBackend]], state: Path
) -> None:
    port = free_port()
    service = {
        "discovery": discovery,
        "haproxy": {"port": port, "bind_address": "127.0.0.1"},
        "zone_routing": {"zones": list(LAYOUT)},
    }
    haproxy = {"state_file_path": str(state)}
    joining = zones["az3"][-1]
    for zone, backends in zones.items():
        for backend in backends:
            if backend is not joining:
                put(backend.name, record(backend, zone))
    local, spill = {"az1": 1.0}, {"az2": 0.5, "az3": 0.5}

    with Synapse({"web": service}, zone="az1", haproxy=haproxy) as syn:
        wait_split(port, zones, local)
        workers = syn.workers()
        zones_status = syn.status()["services"]["web"]["zones"]
        assert zones_status["local_zone"] == "az1" and zones_status["mode"] == "local"

        for backend in zones["az1"]:  # the local zone is lost
            put(backend.name, None)
        wait_split(port, zones, spill)
        web = syn.status()["services"]["web"]["zones"]
        assert web["mode"] == "spill" and web["share"] == {"az1": 0.0, "az2": 0.5, "az3": 0.5}
        page = json.loads(syn.admin("/status/page.json"))  # the status page's data
        [row] = [s for s in page["services"] if s["n"] == "web"]
        assert {z["z"]: z["share"] for z in row["z"]} == web["share"], "the page shows the split"
        assert row["zm"]["mode"] == "spill"

        answer = post(syn, "/zones/az2/evacuate")
        assert answer["services"]["web"]["evacuated"] == ["az2"]
        wait_split(port, zones, {"az3": 1.0})
        assert reloads(syn) == 0 and syn.workers() == workers, "no reload for any of it"

    # synapse restarts: the evacuation is kept (state file)
    with Synapse({"web": service}, zone="az1", haproxy=haproxy) as syn:
        wait_split(port, zones, {"az3": 1.0})
        workers = syn.workers()
        assert syn.status()["services"]["web"]["zones"]["evacuated"] == ["az2"]
        post(syn, "/zones/az2/restore")
        wait_split(port, zones, spill)
        # servers join and leave a zone: still 50/50 per zone (added at runtime, 7 in az3)
        put(joining.name, record(joining, "az3"))
        wait(lambda: shares(port, zones) and joining.requests > 0, what="traffic to the new one")
        put(zones["az2"][1].name, None)
        wait_split(port, zones, spill)
        put(zones["az2"][1].name, record(zones["az2"][1], "az2"))
        wait_split(port, zones, spill)
        for backend in zones["az1"]:  # the local zone is back
            put(backend.name, record(backend, "az1"))
        wait_split(port, zones, local)
        post(syn, "/zones/az1/evacuate")  # an operator moves traffic off the local zone
        wait_split(port, zones, spill)
        post(syn, "/zones/az1/restore")
        wait_split(port, zones, local)
        assert reloads(syn) == 0 and syn.workers() == workers, "no reload for any of it"


def test_three_zones_on_zookeeper(zk: ZooKeeperServer, writer: KazooClient, tmp_path: Path,
                                  http_backend_factory) -> None:  # fmt: skip
    path = "/zones/web"
    discovery = {"method": "zookeeper", "hosts": [zk.hosts], "path": path}
    put = zk_putter(writer, path)
    run_scenario(discovery, put, fleet(http_backend_factory), tmp_path / "state.json")


def test_three_zones_on_etcd(etcd: EtcdCluster, tmp_path: Path, http_backend_factory) -> None:
    prefix = "/zones/web"

    def put(name: str, data: bytes | None) -> None:
        etcd_put(etcd, f"{prefix}/{name}", data)

    discovery = {"method": "etcd", "endpoints": etcd.endpoints, "path": prefix}
    run_scenario(discovery, put, fleet(http_backend_factory), tmp_path / "state.json")
