"""Data-plane metrics without an exporter of ours: a real synapse (managed HAProxy,
ZooKeeper) renders HAProxy's stats frontend; that HAProxy serves its Prometheus exporter
(haproxy_backend_*, haproxy_server_*) and its stats page. synapse's own /metrics adds what
HAProxy cannot know (synapse_server_info: origin, zone; watcher connectivity), and the
status page's JSON carries live request and 5xx rates read from HAProxy's `show stat`."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

from kazoo.client import KazooClient
from prometheus_client.parser import text_string_to_metric_families
from synapse_e2e import Synapse, http_get, nerve_record, wait, wait_serving

from testbed.process import free_port
from testbed.zookeeper import ZooKeeperServer


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=3) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, ""


def families(text: str) -> dict:
    return {family.name: family for family in text_string_to_metric_families(text)}


def samples(found: dict, name: str, **labels: str) -> list:
    return [s for s in found[name].samples if all(s.labels.get(k) == v for k, v in labels.items())]


def test_haproxy_exporter_stats_page_server_info_and_traffic_rates(
    zk: ZooKeeperServer, writer: KazooClient, http_backend_factory
) -> None:
    a, b = http_backend_factory("a"), http_backend_factory("b")
    a.set_healthy(False)  # its /health answers 503: our 5xx through HAProxy
    path = "/dataplane/web"
    record = nerve_record(a, labels={"zone": "az1"})
    writer.create(f"{path}/a_", record, sequence=True, makepath=True)
    web_port, static_port = free_port(), free_port()
    services = {
        "web": {
            "discovery": {"method": "zookeeper", "hosts": [zk.hosts], "path": path},
            "haproxy": {"port": web_port, "bind_address": "127.0.0.1"},
        },
        "static": {
            "discovery": {"method": "base"},
            "default_servers": [{"name": "b", "host": "127.0.0.1", "port": b.port}],
            "haproxy": {"port": static_port, "bind_address": "127.0.0.1"},
        },
    }
    with Synapse(services) as synapse:
        wait_serving(web_port, {"a"})
        wait_serving(static_port, {"b"})
        stats = f"http://127.0.0.1:{synapse.stats_port}"
        assert "frontend synapse_stats" in synapse.haproxy_config()

        page = f"http://127.0.0.1:{synapse.admin_port}/status/page.json"
        get(page)  # the first sample: totals only
        for _ in range(5):
            assert http_get(web_port)[0] == 200
        assert get(f"http://127.0.0.1:{web_port}/health")[0] == 503
        time.sleep(1.1)  # the sampler answers from memory for a second
        data = json.loads(get(page)[1])
        [web] = [s for s in data["services"] if s["n"] == "web"]
        [row] = web["s"]
        assert row[2] == "UP" and row[5] == "az1"
        assert row[6] is not None and row[6] > 0  # requests per second
        assert row[7] is not None and row[7] > 0 and row[8] >= 1  # 5xx per second, total
        assert (web["up"], web["t"]) == (1, 1)

        # HAProxy's own exporter: backends and servers, by HAProxy's names.
        status, text = get(f"{stats}/metrics")
        assert status == 200
        found = families(text)
        assert any(name.startswith("haproxy_backend_") for name in found)
        assert any(name.startswith("haproxy_server_") for name in found)
        up = samples(found, "haproxy_backend_active_servers", proxy="web")
        assert [s.value for s in up] == [1]
        server = a.name + "_127.0.0.1:" + str(a.port)
        five = samples(found, "haproxy_server_http_responses", proxy="web", code="5xx")
        assert [s.value >= 1 for s in five if s.labels["server"] == server] == [True]

        status, html = get(f"{stats}/stats")
        assert status == 200 and "Statistics Report" in html and "static" in html

        # synapse's /metrics: what HAProxy cannot know.
        mine = families(synapse.admin("/metrics"))
        info = {
            (s.labels["service"], s.labels["server"]): s
            for s in mine["synapse_server_info"].samples
        }
        assert info[("web", server)].labels["origin"] == "zookeeper"
        assert info[("web", server)].labels["zone"] == "az1"
        assert info[("static", f"b_127.0.0.1:{b.port}")].labels["origin"] == "default"
        assert info[("static", f"b_127.0.0.1:{b.port}")].labels["zone"] == "unknown"
        assert all(s.value == 1 for s in info.values()) and len(info) == 2
        connected = samples(mine, "synapse_watcher_connected", service="web")
        assert [s.value for s in connected] == [1]

        # A server that leaves is gone from synapse_server_info at the next scrape (an
        # empty registry would keep the last servers: use_previous_backends).
        c = http_backend_factory("c")
        writer.create(f"{path}/c_", nerve_record(c), sequence=True, makepath=True)
        for child in writer.get_children(path):
            if child.startswith("a_"):
                writer.delete(f"{path}/{child}")
        wait_serving(web_port, {"c"})

        def web_servers() -> set[str]:
            found = families(synapse.admin("/metrics"))
            return {
                s.labels["server"] for s in samples(found, "synapse_server_info", service="web")
            }

        wait(lambda: web_servers() == {f"c_127.0.0.1:{c.port}"}, what="only c in server_info")
