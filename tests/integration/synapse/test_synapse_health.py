"""synapse's /health and /health/<service> with a real synapse, managed HAProxy and ZooKeeper:
503 exactly when HAProxy does not run the desired state, or a service lacks UP servers."""

from __future__ import annotations

import json
import signal
import urllib.error
import urllib.request

from kazoo.client import KazooClient
from synapse_e2e import Synapse, nerve_record, wait, wait_serving, zk_service

from testbed.process import free_port


def get(syn: Synapse, path: str) -> tuple[int, dict]:
    url = f"http://127.0.0.1:{syn.admin_port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_service_health_counts_up_servers_in_haproxy(zk, writer: KazooClient, http_backend_factory):
    a, b = http_backend_factory("a"), http_backend_factory("b")
    path = "/health-e2e/web"
    child_a = writer.create(f"{path}/a_", nerve_record(a), sequence=True, makepath=True)
    writer.create(f"{path}/b_", nerve_record(b), sequence=True, makepath=True)
    port = free_port()
    with Synapse({"web": zk_service(zk, path, port, min_up=2)}) as syn:
        wait_serving(port, {"a", "b"})
        assert get(syn, "/health") == (200, {"ok": True, "problems": []})
        status, body = get(syn, "/health/web")
        assert (status, body["ok"], body["up"], body["min_up"]) == (200, True, 2, 2)
        assert sorted(body["servers"].values()) == ["UP", "UP"]
        assert get(syn, "/health/web?min=3")[0] == 503
        assert get(syn, "/health/nope")[0] == 404
        # One server leaves: HAProxy puts it in maintenance, one UP is fewer than min_up 2.
        writer.delete(child_a)
        wait(lambda: get(syn, "/health/web")[0] == 503, what="/health/web 503 with 1 UP")
        assert get(syn, "/health/web?min=1")[0] == 200
        assert get(syn, "/health")[0] == 200  # HAProxy itself runs what it should

        # A config HAProxy refuses (SIGHUP): the old one keeps serving, /health says so.
        good = dict(syn.config["haproxy"])
        syn.config["haproxy"]["global"] = [*good["global"], "no-such-directive 1"]
        syn.write_config()
        syn.signal(signal.SIGHUP)
        wait(lambda: get(syn, "/health")[0] == 503, what="/health 503 for an invalid config")
        assert "cannot be applied" in " ".join(get(syn, "/health")[1]["problems"])
        wait_serving(port, {"b"})
        syn.config["haproxy"] = good
        syn.write_config()
        syn.signal(signal.SIGHUP)
        wait(lambda: get(syn, "/health")[0] == 200, what="/health 200 with a good config again")


def test_health_is_503_when_haproxy_cannot_run(zk, writer: KazooClient, http_backend_factory):
    a = http_backend_factory("a")
    path = "/health-e2e/nobinary"
    writer.create(f"{path}/a_", nerve_record(a), sequence=True, makepath=True)
    syn = Synapse({"web": zk_service(zk, path, free_port())})
    syn.config["haproxy"]["managed"]["binary"] = "/nonexistent/haproxy"
    syn.write_config()
    with syn:
        status, body = get(syn, "/health")
        assert status == 503
        assert "HAProxy is not running" in body["problems"]
        assert any("/nonexistent/haproxy" in line for line in body["problems"])
        assert get(syn, "/health/web")[0] == 503
