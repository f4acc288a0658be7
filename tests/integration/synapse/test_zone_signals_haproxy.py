"""Zone signals end to end (docs/zone-routing.md): real ZooKeeper / etcd, synapse with a
managed HAProxy 2.6, real HTTP backends in three zones (2/2/6 servers, local zone az1).

The sticky cookie pins a client to its zone and beats the header, which beats the
arrival address (frontend bound on 127.0.0.1, 127.0.0.2 -> az2, 127.0.0.3 -> az3). A
response sets the cookie to the zone that answered when the request's cookie said
otherwise. A cookie for a zone that dies falls back to the normal decision (the local
zone) and is re-set there; the zone back, the cookie pins again; an evacuated zone gets
no named traffic while another zone can serve. HAProxy is never reloaded (synapse's
reload counter, HAProxy's master count and worker PIDs).
"""

from __future__ import annotations

import http.client
import json
import shutil
import signal
import subprocess
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kazoo.client import KazooClient
from synapse_e2e import Synapse, etcd_put, nerve_record, wait, zk_putter, zoned_service

from smartstack.record import Registration
from synapse.config import SynapseConfig
from synapse.haproxy.render import Renderer
from synapse.model import DesiredService, Server
from synapse.zone_apply import ZoneRouter
from testbed.etcd import EtcdCluster
from testbed.process import free_port
from testbed.zookeeper import ZooKeeperServer

LAYOUT = {"az1": 2, "az2": 2, "az3": 6}
REQUESTS = 30
COOKIE, HEADER = "SRVZONE", "X-Zone"
ADDRESSES = {"127.0.0.2": "az2", "127.0.0.3": "az3"}

Put = Callable[[str, bytes | None], None]  # (record name, record or None: delete)


def get(port: int, address: str = "127.0.0.1", **headers: str) -> tuple[str, str | None]:
    """GET / through HAProxy at ``address``: (the answering backend's name, the zone in
    its Set-Cookie or None)."""
    conn = http.client.HTTPConnection(address, port, timeout=5)
    try:
        conn.request("GET", "/", headers=headers)
        answer = conn.getresponse()
        body = answer.read().decode()
        assert answer.status == 200, f"{answer.status} from {address} with {headers}"
        cookie = answer.getheader("Set-Cookie")
    finally:
        conn.close()
    if cookie is None:
        return body, None
    assert cookie.startswith(f"{COOKIE}=") and cookie.endswith("; Path=/"), cookie
    return body, cookie[len(COOKIE) + 1 : -len("; Path=/")]


def zones_of(port: int, address: str = "127.0.0.1", **headers: str) -> Counter[str]:
    """Which zones answered REQUESTS requests (backend names are ``<zone>-<i>``)."""
    return Counter(get(port, address, **headers)[0].split("-")[0] for _ in range(REQUESTS))


def all_in(zone: str, port: int, address: str = "127.0.0.1", **headers: str) -> None:
    seen: list[Counter[str]] = []

    def holds() -> bool:
        seen.append(zones_of(port, address, **headers))
        return set(seen[-1]) == {zone}

    try:
        wait(holds, timeout=20, what=f"{address} {headers} served by {zone} only")
    except TimeoutError as err:
        raise AssertionError(f"{err}; last seen: {seen[-1:]}") from None


def post(syn: Synapse, path: str) -> None:
    request = urllib.request.Request(f"http://127.0.0.1:{syn.admin_port}{path}", method="POST")
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.status == 200


def reloads(syn: Synapse) -> float:
    total = syn.metric("synapse_haproxy_reloads_total")
    return total - syn.metric("synapse_haproxy_reloads_total", reason="start")


def run_scenario(discovery: dict[str, Any], put: Put, factory) -> None:
    zones = {z: [factory(f"{z}-{i}") for i in range(n)] for z, n in LAYOUT.items()}
    for zone, backends in zones.items():
        for backend in backends:
            put(backend.name, nerve_record(backend, labels={"zone": zone}))
    port = free_port()
    service = {
        "discovery": discovery,
        "haproxy": {"port": port, "bind_address": "127.0.0.1"},
        "zone_routing": {"zones": list(LAYOUT), "sticky": COOKIE, "header": HEADER,
                         "zone_of_address": ADDRESSES},
    }  # fmt: skip
    with Synapse({"web": service}, zone="az1") as syn:
        all_in("az1", port)
        workers, master = syn.workers(), syn.master_reloads()
        text = syn.haproxy_config()
        assert all(f"backend web_zone_{z}" in text for z in LAYOUT), text

        # no cookie: the local zone answers and says so; the cookie then pins
        assert get(port)[1] == "az1"
        all_in("az3", port, Cookie=f"{COOKIE}=az3")
        assert get(port, Cookie=f"{COOKIE}=az3")[1] is None, "the right cookie is not re-set"
        # the header, and the cookie before it; the arrival address, and both before it
        all_in("az2", port, **{HEADER: "az2"})
        assert get(port, **{HEADER: "az2"})[1] == "az2"
        all_in("az3", port, Cookie=f"{COOKIE}=az3", **{HEADER: "az2"})
        all_in("az2", port, "127.0.0.2")
        all_in("az3", port, "127.0.0.3")
        all_in("az1", port, "127.0.0.3", Cookie=f"{COOKIE}=az1")
        all_in("az2", port, "127.0.0.3", **{HEADER: "az2"})
        # a zone name nothing serves: the normal decision
        all_in("az1", port, Cookie=f"{COOKIE}=az9")

        # az3 dies: its cookie falls back to the local zone and is re-set to it
        for backend in zones["az3"]:
            put(backend.name, None)
        all_in("az1", port, Cookie=f"{COOKIE}=az3")
        assert get(port, Cookie=f"{COOKIE}=az3")[1] == "az1"
        all_in("az1", port, "127.0.0.3")
        for backend in zones["az3"]:  # az3 is back: the cookie pins again
            put(backend.name, nerve_record(backend, labels={"zone": "az3"}))
        all_in("az3", port, Cookie=f"{COOKIE}=az3")

        # az2 evacuated: no named traffic while another zone can serve; restored: back
        post(syn, "/zones/az2/evacuate")
        all_in("az1", port, Cookie=f"{COOKIE}=az2")
        all_in("az1", port, "127.0.0.2")
        post(syn, "/zones/az2/restore")
        all_in("az2", port, Cookie=f"{COOKIE}=az2")

        # a brand-new az2 server: added to both backends and to the map at runtime
        joining = factory("az2-new")
        put(joining.name, nerve_record(joining, labels={"zone": "az2"}))

        def reached(address: str = "127.0.0.1", **headers: str) -> bool:
            return any(get(port, address, **headers)[0] == "az2-new" for _ in range(10))

        wait(lambda: reached(**{HEADER: "az2"}), what="the new az2 server to answer")
        wait(lambda: reached("127.0.0.2"), what="the new server reached by its address")
        cookies = [get(port, **{HEADER: "az2"}) for _ in range(REQUESTS)]
        assert "az2-new" in {b for b, _ in cookies}
        assert {c for b, c in cookies if b == "az2-new"} == {"az2"}, "its map entry is there"

        web = syn.status()["services"]["web"]["zones"]
        assert web["signals"] == {"sticky": COOKIE, "header": HEADER,
                                  "zone_of_address": ADDRESSES}  # fmt: skip
        assert web["named"] == ["az1", "az2", "az3"], "zones that take named traffic"
        page = json.loads(syn.admin("/status/page.json"))  # the status page's data
        [row] = [s for s in page["services"] if s["n"] == "web"]
        assert row["zm"]["sig"] == "cookie SRVZONE · header X-Zone · 2 addresses"
        assert reloads(syn) == 0, "no reload for any transition among known zones"
        assert syn.workers() == workers and syn.master_reloads() == master


def test_zone_signals_on_zookeeper(
    zk: ZooKeeperServer, writer: KazooClient, tmp_path: Path, http_backend_factory
) -> None:
    path = "/zones/signals"
    discovery = {"method": "zookeeper", "hosts": [zk.hosts], "path": path}
    run_scenario(discovery, zk_putter(writer, path), http_backend_factory)


def test_zone_signals_on_etcd(etcd: EtcdCluster, tmp_path: Path, http_backend_factory) -> None:
    prefix = "/zones/signals"

    def put(name: str, data: bytes | None) -> None:
        etcd_put(etcd, f"{prefix}/{name}", data)

    discovery = {"method": "etcd", "endpoints": etcd.endpoints, "path": prefix}
    run_scenario(discovery, put, http_backend_factory)


def test_a_zone_never_seen_costs_one_reload_then_none(
    zk: ZooKeeperServer, writer: KazooClient, http_backend_factory
) -> None:
    """Without ``zones``, a new zone needs its backend (one reload); once seen, it stays
    known: its servers leaving and coming back cost nothing."""
    path = "/zones/unlisted"
    writer.ensure_path(path)
    backends = {z: http_backend_factory(f"{z}-0") for z in ("az1", "az2", "az3")}

    def put(zone: str, present: bool) -> None:
        node = f"{path}/{zone}-0"
        if present:
            writer.create(node, nerve_record(backends[zone], labels={"zone": zone}))
        else:
            writer.delete(node)

    put("az1", True)
    put("az2", True)
    port = free_port()
    service = zoned_service(zk.hosts, path, port, sticky=COOKIE)
    with Synapse({"web": service}, zone="az1") as syn:
        all_in("az2", port, Cookie=f"{COOKIE}=az2")
        assert "web_zone_az3" not in syn.haproxy_config() and reloads(syn) == 0
        put("az3", True)
        all_in("az3", port, Cookie=f"{COOKIE}=az3")
        wait(lambda: reloads(syn) == 1, what="synapse to count the reload")
        put("az3", False)
        all_in("az1", port, Cookie=f"{COOKIE}=az3")
        put("az3", True)
        all_in("az3", port, Cookie=f"{COOKIE}=az3")
        assert reloads(syn) == 1, "a zone seen once stays known: no further reload"


def test_a_zone_the_list_lacks_gets_no_backend_and_costs_no_reload(
    zk: ZooKeeperServer, writer: KazooClient, http_backend_factory
) -> None:
    """With ``zones`` listed, a zone only the records name gets no backend: its server is
    served by the service's backend (the normal decision), a cookie naming it gets the
    normal decision, and HAProxy is not reloaded."""
    path = "/zones/not-listed"
    writer.ensure_path(path)
    backends = {z: http_backend_factory(f"{z}-0") for z in ("az1", "az9")}
    writer.create(f"{path}/az1-0", nerve_record(backends["az1"], labels={"zone": "az1"}))
    port = free_port()
    service = zoned_service(zk.hosts, path, port, zones=["az1", "az2"], sticky=COOKIE)
    with Synapse({"web": service}, zone="az1") as syn:
        all_in("az1", port, Cookie=f"{COOKIE}=az1")
        writer.create(f"{path}/az9-0", nerve_record(backends["az9"], labels={"zone": "az9"}))
        wait(lambda: syn.metric("synapse_zone_backends_refused_total") == 1, what="refused")
        all_in("az1", port, Cookie=f"{COOKIE}=az9")  # no az9 backend: the normal decision
        post(syn, "/zones/az1/evacuate")  # the spill: az9's server, in the service's backend
        all_in("az9", port)
        assert "web_zone_az9" not in syn.haproxy_config()
        refused = syn.metric("synapse_zone_backends_refused_total", reason="not_listed")
        assert refused == 1 and reloads(syn) == 0


def test_an_isolated_service_keeps_its_zone_signals_without_a_reload(
    zk: ZooKeeperServer, writer: KazooClient, http_backend_factory
) -> None:
    """A SIGHUP with a line ``haproxy -c`` refuses isolates the service: it runs its last
    good block, zone lines included, so nothing changes and nothing reloads."""
    path = "/zones/isolated"
    put = zk_putter(writer, path)
    for zone in ("az1", "az2"):
        backend = http_backend_factory(f"{zone}-0")
        put(backend.name, nerve_record(backend, labels={"zone": zone}))
    port = free_port()
    service = zoned_service(zk.hosts, path, port, zones=["az1", "az2"], header=HEADER)
    with Synapse({"web": service}, zone="az1") as syn:
        all_in("az2", port, **{HEADER: "az2"})
        good = syn.haproxy_config()
        syn.config["services"]["web"]["haproxy"]["backend"] = ["no-such-directive here"]
        syn.write_config()
        syn.signal(signal.SIGHUP)
        wait(lambda: "web" in syn.status()["haproxy"]["isolated_services"], what="isolation")
        all_in("az2", port, **{HEADER: "az2"})
        assert syn.haproxy_config() == good and reloads(syn) == 0


@pytest.mark.parametrize("mode", ["http", "tcp"])
def test_rendered_signals_pass_haproxy_check_without_warnings(tmp_path: Path, mode: str) -> None:
    """The real ``haproxy -c`` accepts the lines, and says nothing about them (rule order)."""
    routing: dict[str, Any] = {"zones": list(LAYOUT), "zone_of_address": ADDRESSES}
    if mode == "http":
        routing |= {"sticky": COOKIE, "header": HEADER}
    config = SynapseConfig.model_validate({
        "zone": "az1",
        "services": {"web": {
            "discovery": {"method": "base"},
            "haproxy": {"port": 3000, "frontend": [f"mode {mode}"], "backend": [f"mode {mode}"]},
            "zone_routing": routing,
        }},
        "haproxy": {"config_file_path": str(tmp_path / "haproxy.cfg"), "reload_command": "true",
                    "defaults": ["timeout connect 1s", "timeout client 5s", "timeout server 5s"]},
    })  # fmt: skip
    assert config.haproxy is not None
    servers = [
        Server.from_registration(
            Registration(f"10.0.0.{i}", 80, f"az{i}", labels={"zone": f"az{i}"}), "t"
        )
        for i in (1, 2, 3)
    ]
    routed = ZoneRouter("az1").routed(DesiredService("web", config.services["web"], servers))
    text = Renderer(config.haproxy).render(routed).text
    (tmp_path / "haproxy.zones.map").write_text("")
    path = tmp_path / "candidate.cfg"
    path.write_text(text)
    proc = subprocess.run([shutil.which("haproxy") or "haproxy", "-c", "-f", str(path)],
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert proc.returncode == 0 and "WARNING" not in proc.stdout + proc.stderr, proc.stderr
    assert text.count("use_backend web_zone_") == (8 if mode == "http" else 2)


def test_tcp_frontend_routes_by_arrival_address(
    zk: ZooKeeperServer, writer: KazooClient, http_backend_factory
) -> None:
    """TCP mode: only the address can name a zone (HAProxy's ``dst``); cookie and header
    are config errors there (unit tests)."""
    path = "/zones/tcp"
    put = zk_putter(writer, path)
    zones = {z: [http_backend_factory(f"{z}-{i}") for i in range(n)] for z, n in LAYOUT.items()}
    for zone, backends in zones.items():
        for backend in backends:
            put(backend.name, nerve_record(backend, labels={"zone": zone}))
    port = free_port()
    service = {
        "discovery": {"method": "zookeeper", "hosts": [zk.hosts], "path": path},
        "haproxy": {"port": port, "bind_address": "127.0.0.1", "frontend": ["mode tcp"],
                    "backend": ["mode tcp"]},
        "zone_routing": {"zones": list(LAYOUT), "zone_of_address": ADDRESSES},
    }  # fmt: skip
    with Synapse({"web": service}, zone="az1") as syn:
        all_in("az1", port)
        all_in("az2", port, "127.0.0.2")
        all_in("az3", port, "127.0.0.3")
        for backend in zones["az2"]:  # az2 lost: its address gets the normal decision
            put(backend.name, None)
        all_in("az1", port, "127.0.0.2")
        assert reloads(syn) == 0
