"""synapse as a real subprocess with a managed HAProxy 2.6, ZooKeeper and etcd, real traffic.

Records are written by hand into the registries (not through nerve).
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from kazoo.client import KazooClient
from synapse_e2e import (
    Synapse,
    nerve_record,
    processes_using,
    register,
    spread,
    wait,
    wait_serving,
    zk_service,
)
from synapse_e2e import etcd_put as put_key

from testbed.etcd import EtcdCluster
from testbed.process import free_port
from testbed.zookeeper import ZooKeeperServer


def test_zookeeper_records_drive_traffic_without_reloads(zk, writer, http_backend_factory):
    a, b, c, d = (http_backend_factory(n) for n in ("a", "b", "c", "d"))
    path = "/e2e/web"
    child_a = register(writer, path, a)
    register(writer, path, b)
    port = free_port()
    with Synapse({"web": zk_service(zk, path, port)}) as syn:
        wait_serving(port, {"a", "b"})
        workers = syn.workers()
        # A record removed: its server stops getting traffic.
        writer.delete(child_a)
        wait_serving(port, {"b"})
        # A brand-new server, removed, re-added: traffic follows every step.
        child_c = register(writer, path, c)
        wait_serving(port, {"b", "c"})
        writer.delete(child_c)
        wait_serving(port, {"b"})
        register(writer, path, c)
        register(writer, path, d)
        wait_serving(port, {"b", "c", "d"})
        assert syn.workers() == workers, "membership changes must not reload HAProxy"

        web = syn.status()["services"]["web"]
        assert web["origin"] == "discovery"
        assert {s["origin"].rsplit("/", 1)[0] for s in web["servers"]} == {"zookeeper:/e2e/web"}
        assert syn.metric("synapse_watch_to_applied_seconds_count") >= 4
        page = syn.admin("/status/page.json")  # the status page's data (the HTML is static)
        assert '"n":"web"' in page and f"c_127.0.0.1:{c.port}" in page


def test_hostile_records_never_reach_haproxy(zk, writer, http_backend_factory):
    good = http_backend_factory("good")
    path = "/e2e/hostile"
    register(writer, path, good)
    port = free_port()
    with Synapse({"hostile": zk_service(zk, path, port)}) as syn:
        wait_serving(port, {"good"})
        workers = syn.workers()
        hostile = [
            json.dumps({"host": "127.0.0.1\n    server evil 127.0.0.1:1\nlisten x",
                        "port": good.port, "name": "nl"}).encode(),
            json.dumps({"host": "127.0.0.1", "port": 70000, "name": "bigport"}).encode(),
            b"{this is not json",
            json.dumps({"host": "127.0.0.1", "port": 1, "name": "huge",
                        "labels": {"pad": "x" * 200_000}}).encode(),
            json.dumps({"host": "127.0.0.1", "port": good.port, "name": "a b;c"}).encode(),
        ]  # fmt: skip
        for data in hostile:
            writer.create(f"{path}/bad_", data, sequence=True)
        wait(lambda: syn.status()["services"]["hostile"]["watcher"]["skipped_records"] == 5,
             what="5 skipped records")  # fmt: skip
        assert syn.metric("synapse_bad_records_total", service="hostile") == 5
        config = syn.haproxy_config()
        for needle in ("evil", "70000", "listen x", "huge", "a b;c"):
            assert needle not in config
        assert set(spread(port)) == {"good"}
        assert syn.workers() == workers


def test_edge_shared_frontend_routes_by_host_header(zk, writer, http_backend_factory):
    shop1, shop2, blog = (http_backend_factory(n) for n in ("shop1", "shop2", "blog"))
    for backend in (shop1, shop2):
        register(writer, "/e2e/shop", backend)
    register(writer, "/e2e/blog", blog)
    edge = free_port()

    def service(path: str, host: str, name: str) -> dict:
        return {
            "discovery": {"method": "zookeeper", "hosts": [zk.hosts], "path": path},
            "haproxy": {
                "backend": ["mode http"],
                "shared_frontend": [f"acl is_{name} hdr(host) -i {host}",
                                    f"use_backend {name} if is_{name}"],
            },
        }  # fmt: skip

    services = {
        "shop": service("/e2e/shop", "shop.example.com", "shop"),
        "blog": service("/e2e/blog", "blog.example.com", "blog"),
    }
    haproxy = {"shared_frontend": [f"bind 127.0.0.1:{edge}", "mode http"]}
    with Synapse(services, haproxy=haproxy):
        wait_serving(edge, {"shop1", "shop2"}, host="shop.example.com")
        wait_serving(edge, {"blog"}, host="blog.example.com")
        assert set(spread(edge, 4, host="other.example.com")) == {"http-503"}  # no default


def test_sighup_keeps_old_config_when_new_one_is_invalid(zk, writer, http_backend_factory):
    a = http_backend_factory("a")
    path = "/e2e/reload"
    register(writer, path, a)
    port = free_port()
    syn = Synapse({"svc": zk_service(zk, path, port)})
    try:
        syn.start()
        wait_serving(port, {"a"})
        workers = syn.workers()
        good_config = syn.haproxy_config()

        # 1. Not even a valid synapse file: logged, the running config stays.
        syn.config_path.write_text("services: [unclosed\n")
        syn.signal(signal.SIGHUP)
        wait(lambda: syn.metric("synapse_config_reloads_total", result="failed") == 1)
        assert set(spread(port)) == {"a"}

        # 2. Valid for synapse, refused by `haproxy -c`: the old config keeps running.
        syn.config["services"]["svc"]["haproxy"]["backend"] = ["no-such-directive here"]
        syn.write_config()
        syn.signal(signal.SIGHUP)
        wait(lambda: syn.metric("synapse_config_reloads_total", result="ok") == 1)
        wait(lambda: syn.metric("synapse_haproxy_validation_failures_total") >= 1,
             what="haproxy -c to refuse the new config")  # fmt: skip
        error = syn.status()["haproxy"]["validation_error"]
        assert error and "no-such-directive" in json.dumps(error)
        assert syn.haproxy_config() == good_config
        assert syn.workers() == workers
        assert set(spread(port)) == {"a"}
        assert syn.process.alive

        # 3. A valid change of the haproxy block itself: validated, one reload, still serving.
        del syn.config["services"]["svc"]["haproxy"]["backend"]
        syn.config["haproxy"]["defaults"] = [*syn.config["haproxy"]["defaults"], "retries 2"]
        syn.write_config()
        syn.signal(signal.SIGHUP)
        wait(lambda: "retries 2" in syn.haproxy_config(), what="the new defaults in the config")
        wait(lambda: syn.workers() != workers, what="one reload")
        assert set(spread(port)) == {"a"}

        # 4. SIGTERM: clean stop, exit 0, the managed HAProxy goes with it.
        syn.signal(signal.SIGTERM)
        assert syn.process.wait(20) == 0
        with pytest.raises(OSError):
            syn.workers()
        assert not processes_using(syn.dir), "HAProxy outlived synapse"
    finally:
        syn.cleanup()


def test_zookeeper_outage_then_state_file_start(tmp_path: Path, http_backend_factory):
    a, b = http_backend_factory("a"), http_backend_factory("b")
    server = ZooKeeperServer(workdir=tmp_path / "zk").start()
    writer = KazooClient(hosts=server.hosts)
    writer.start(timeout=30)
    path = "/e2e/outage"
    state_file = tmp_path / "state.json"
    port = free_port()
    services = {"svc": zk_service(server, path, port)}  # type: ignore[arg-type]
    haproxy = {"state_file_path": str(state_file)}
    try:
        register(writer, path, a)
        with Synapse(services, haproxy=haproxy) as syn:
            wait_serving(port, {"a"})
            writer.stop()
            server.stop()  # ZooKeeper gone: HAProxy keeps serving, synapse stays up
            wait(lambda: not syn.status()["services"]["svc"]["watcher"]["connected"])
            assert set(spread(port)) == {"a"}
            assert syn.process.alive
            server.start()  # back, same data dir and port
            writer.start(timeout=30)
            register(writer, path, b)
            wait_serving(port, {"a", "b"}, timeout=40)
            wait(lambda: {s["host"] + ":" + str(s["port"]) for s in
                          json.loads(state_file.read_text())["svc"].values()}
                 == {a.address, b.address}, what="the state file to list a and b")  # fmt: skip
        writer.stop()
        server.stop()
        # Registry down from the start: HAProxy is configured from the state file.
        with Synapse(services, haproxy=haproxy, startup_wait=0.5) as syn:
            wait_serving(port, {"a", "b"})
            svc = syn.status()["services"]["svc"]
            assert svc["origin"] == "state_file"
            assert not svc["watcher"]["connected"]
    finally:
        writer.close()
        server.stop()


def test_etcd_records_outage_and_recovery(tmp_path: Path, http_backend_factory):
    a, b, c = (http_backend_factory(n) for n in ("a", "b", "c"))
    cluster = EtcdCluster(size=1, workdir=tmp_path / "etcd").start()
    port = free_port()

    def etcd_put(key: str, value: bytes | None) -> None:
        put_key(cluster, key, value)

    service = {
        "discovery": {"method": "etcd", "endpoints": cluster.endpoints, "path": "/e2e/api",
                      "retry_policy": {"base_interval": 0.2, "max_interval": 1}},
        "haproxy": {"port": port, "bind_address": "127.0.0.1"},
    }  # fmt: skip
    try:
        etcd_put("/e2e/api/a", nerve_record(a))
        etcd_put("/e2e/api/b", nerve_record(b))
        etcd_put("/e2e/api/evil", b'{"host": "x\\n server y 127.0.0.1:1", "port": 1, "name": "e"}')
        with Synapse({"api": service}) as syn:
            wait_serving(port, {"a", "b"})
            workers = syn.workers()
            watcher = syn.status()["services"]["api"]["watcher"]
            assert watcher["skipped_records"] == 1
            # One service: etcd's JSON gateway (etcd_transport auto), gRPC never loaded.
            assert watcher["transport"] == "json"
            assert "cygrpc" not in Path(f"/proc/{syn.process.pid}/maps").read_text()
            cluster.stop_member(0)
            wait(lambda: not syn.status()["services"]["api"]["watcher"]["connected"])
            assert set(spread(port)) == {"a", "b"}
            cluster.start_member(0)
            etcd_put("/e2e/api/c", nerve_record(c))
            wait_serving(port, {"a", "b", "c"}, timeout=40)
            etcd_put("/e2e/api/a", None)
            wait_serving(port, {"b", "c"})
            assert syn.workers() == workers
            assert "server y" not in syn.haproxy_config()
    finally:
        cluster.stop()
