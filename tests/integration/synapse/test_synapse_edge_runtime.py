"""The edge through a real synapse process, ZooKeeper and a managed HAProxy 2.6: hosts added
and removed on SIGHUP reach HAProxy's maps at runtime (no reload), a new service costs one
reload, the map files on disk follow, and a host moving to a new service is answered all
along."""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter

import pytest
from kazoo.client import KazooClient
from synapse_e2e import Synapse, http_get, register, wait, wait_serving

from testbed.process import free_port
from testbed.zookeeper import ZooKeeperServer


def routed(zk: ZooKeeperServer, path: str, hosts: list[str]) -> dict:
    return {
        "discovery": {"method": "zookeeper", "hosts": [zk.hosts], "path": path},
        "haproxy": {"routes": {"hosts": hosts}},
    }


def shop_edge(zk: ZooKeeperServer, writer: KazooClient, backends, root: str) -> tuple[int, Synapse]:
    """shop and news registered under ``root``; an edge synapse (not started) routing
    shop.test to shop alone on its shared frontend's port."""
    for name in ("shop", "news"):
        register(writer, f"{root}/{name}", backends(name))
    port = free_port()
    services = {"shop": routed(zk, f"{root}/shop", ["shop.test"])}
    return port, Synapse(services, haproxy={"shared_frontend": [f"bind 127.0.0.1:{port}"]})


def status_of(port: int, host: str) -> tuple[int, str]:
    try:
        return http_get(port, host, timeout=1.0)
    except OSError:
        return 0, ""


def until(port: int, host: str, expected: tuple[int, str], limit: float) -> float:
    """Seconds until ``host`` answers ``expected`` (polled every 20 ms, at most ``limit``)."""
    began = time.monotonic()
    deadline = began + limit
    while time.monotonic() < deadline:
        if status_of(port, host) == expected:
            return time.monotonic() - began
        time.sleep(0.02)
    raise AssertionError(f"{host} did not answer {expected} within {limit}s")


def test_hosts_change_at_runtime_and_a_new_service_costs_one_reload(
    zk, writer, http_backend_factory
):
    port, edge = shop_edge(zk, writer, http_backend_factory, "/edge")
    with edge as syn:
        wait_serving(port, {"shop"}, host="shop.test")
        assert status_of(port, "other.test") == (404, "")
        # An edge validates in-process (its SIGHUP is its route change: no child to start).
        assert syn.status()["config_models"] == "pydantic"
        workers = syn.workers()
        reloads = syn.status()["haproxy"]["reloads"]

        # A host added on SIGHUP: routable within a second, no reload.
        syn.config["services"]["shop"]["haproxy"]["routes"]["hosts"].append("www.shop.test")
        syn.write_config()
        syn.signal(signal.SIGHUP)
        assert until(port, "www.shop.test", (200, "shop"), 5.0) <= 1.0
        assert syn.workers() == workers
        assert syn.status()["haproxy"]["reloads"] == reloads
        exact = syn.dir / "haproxy.routes-exact.map"
        wait(lambda: "www.shop.test/ shop" in exact.read_text(), 5, "the map file on disk")

        # Removed again: a 404 within a second, still no reload.
        syn.config["services"]["shop"]["haproxy"]["routes"]["hosts"] = ["shop.test"]
        syn.write_config()
        syn.signal(signal.SIGHUP)
        assert until(port, "www.shop.test", (404, ""), 5.0) <= 1.0
        assert status_of(port, "shop.test") == (200, "shop")
        assert syn.workers() == workers
        assert syn.status()["haproxy"]["reloads"] == reloads
        wait(lambda: "www.shop.test" not in exact.read_text(), 5, "the map file on disk")

        # A new service: its backend needs one reload, then its host routes.
        syn.config["services"]["news"] = routed(zk, "/edge/news", ["news.test"])
        syn.write_config()
        syn.signal(signal.SIGHUP)
        until(port, "news.test", (200, "news"), 10.0)
        # The new worker answers before synapse has confirmed it and counted the reload.
        wait(lambda: syn.status()["haproxy"]["reloads"] == reloads + 1, 5, "one reload")
        assert syn.workers() != workers
        assert status_of(port, "shop.test") == (200, "shop")
        text = exact.read_text()
        assert "news.test/ news" in text and "shop.test/ shop" in text


def test_a_bad_line_isolates_its_service_and_the_others_change_applies(
    zk, writer, http_backend_factory
):
    port, edge = shop_edge(zk, writer, http_backend_factory, "/iso")
    with edge as syn:
        wait_serving(port, {"shop"}, host="shop.test")
        good = syn.haproxy_config()

        # One SIGHUP: a bad line in shop, a new service news.
        syn.config["services"]["shop"]["haproxy"]["backend"] = ["no-such-directive here"]
        syn.config["services"]["news"] = routed(zk, "/iso/news", ["news.test"])
        syn.write_config()
        syn.signal(signal.SIGHUP)
        until(port, "news.test", (200, "news"), 15.0)  # the other change is applied
        assert status_of(port, "shop.test") == (200, "shop")
        text = syn.haproxy_config()
        assert "backend news" in text and "no-such-directive" not in text
        shop_section = good[good.index("backend shop") :].split("\n\n")[0]
        assert shop_section.split("\n    server")[0] in text  # shop's last good block
        isolated = syn.status()["haproxy"]["isolated_services"]
        assert list(isolated) == ["shop"] and "no-such-directive" in isolated["shop"]["error"]
        assert syn.status()["services"]["shop"]["config_isolated"]["error"]
        assert syn.metric("synapse_service_config_isolated", service="shop") == 1
        assert "config refused by haproxy -c" in syn.admin("/")

        # Fixed on the next good SIGHUP: the new block runs, the flag is gone.
        syn.config["services"]["shop"]["haproxy"]["backend"] = ["retries 2"]
        syn.write_config()
        syn.signal(signal.SIGHUP)
        wait(lambda: "retries 2" in syn.haproxy_config(), 15, "shop's fixed block")
        wait(lambda: not syn.status()["haproxy"]["isolated_services"], 5, "the flag to go")
        assert syn.metric("synapse_service_config_isolated", service="shop") == 0
        assert status_of(port, "shop.test") == (200, "shop")
        assert status_of(port, "news.test") == (200, "news")


class HostLoad:
    """GET / for ``host`` from a thread, one after another, until ``stop()`` (bounded):
    the (status, body) answers counted."""

    def __init__(self, port: int, host: str, limit: int = 50000, seconds: float = 60.0) -> None:
        self.port, self.host, self.limit, self.seconds = port, host, limit, seconds
        self.answers: Counter[tuple[int, str]] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> Counter[tuple[int, str]]:
        self._stop.set()
        self._thread.join(10)
        return self.answers

    def _run(self) -> None:
        deadline = time.monotonic() + self.seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            self.answers[status_of(self.port, self.host)] += 1
            if self.answers.total() >= self.limit:
                break


@pytest.mark.parametrize(
    "backend",
    [[], ["balance static-rr"]],
    ids=["runtime_server", "reload_server"],
)
def test_a_host_moved_to_a_new_service_is_answered_until_the_new_one_serves(
    zk, writer, http_backend_factory, backend
):
    """shop.test moves from shop to a new service shop2 on SIGHUP: its backend needs a
    reload (made to wait), and its watcher finds no server at first. The old route serves
    until the reload (no 404), and after it until HAProxy has a server in shop2 (no 503):
    added at runtime, or (static-rr) by a second reload, rate limited: shop2's server is
    desired a while before HAProxy has it."""
    shop, shop2 = http_backend_factory("shop"), http_backend_factory("shop2")
    path = f"/move{len(backend)}"
    register(writer, f"{path}/shop", shop)
    writer.ensure_path(f"{path}/shop2")  # no server yet
    port = free_port()
    services = {"shop": routed(zk, f"{path}/shop", ["shop.test"])}
    haproxy = {"shared_frontend": [f"bind 127.0.0.1:{port}"], "restart_interval": 3.0}
    with Synapse(services, haproxy=haproxy) as syn:
        wait_serving(port, {"shop"}, host="shop.test")
        reloads = syn.status()["haproxy"]["reloads"]
        load = HostLoad(port, "shop.test")
        try:
            syn.config["services"]["shop"]["haproxy"]["routes"]["hosts"] = ["old.shop.test"]
            syn.config["services"]["shop2"] = routed(zk, f"{path}/shop2", ["shop.test"])
            syn.config["services"]["shop2"]["haproxy"]["backend"] = backend
            syn.write_config()
            syn.signal(signal.SIGHUP)
            until(port, "old.shop.test", (200, "shop"), 5.0)  # the runtime change came
            wait(lambda: syn.status()["haproxy"]["reloads"] > reloads, 10, "the reload")
            assert status_of(port, "shop.test") == (200, "shop")  # shop2 has no server
            register(writer, f"{path}/shop2", shop2)
            until(port, "shop.test", (200, "shop2"), 10.0)
            wait(lambda: load.answers[(200, "shop2")] > 0, 5, "the load to reach shop2")
        finally:
            answers = load.stop()
        assert set(answers) == {(200, "shop"), (200, "shop2")}, answers
        exact = (syn.dir / "haproxy.routes-exact.map").read_text()
        assert "shop.test/ shop2" in exact and "old.shop.test/ shop" in exact
        assert "haproxy_routes_held" in syn.log(400)
