"""A typo in synapse's config, rejected at SIGHUP, must not leave a rebooted host without
HAProxy: synapse (managed mode) starts from its last good copy, says so on /health, /status
and /metrics, and a SIGHUP with the fixed file loads it. Review s38: before, the start
exited 2 and HAProxy was never started again (1,202 of 1,202 requests failed in 12 s).
Real ZooKeeper, synapse, HAProxy and HTTP backends."""

from __future__ import annotations

import json
import signal
import subprocess
import urllib.error
import urllib.request

from kazoo.client import KazooClient
from synapse_e2e import SYNAPSE, Synapse, register, spread, wait, wait_serving, zk_service

from testbed.process import free_port
from testbed.zookeeper import ZooKeeperServer


def health(synapse: Synapse) -> dict:
    url = f"http://127.0.0.1:{synapse.admin_port}/health"
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:  # (a 503's body says why)
        return json.loads(error.read())


def test_a_reboot_with_an_invalid_file_serves_the_last_good_config(
    zk: ZooKeeperServer, writer: KazooClient, http_backend_factory
) -> None:
    backend = http_backend_factory("lg-1")
    port = free_port()
    register(writer, "/lastgood/web", backend)
    with Synapse({"web": zk_service(zk, "/lastgood/web", port)}) as synapse:
        wait_serving(port, {"lg-1"})
        haproxy = synapse.config["services"]["web"]["haproxy"]
        haproxy["prot"] = haproxy.pop("port")  # config management pushes a typo ...
        synapse.write_config()
        synapse.signal(signal.SIGHUP)
        wait(lambda: "config_reload_failed" in synapse.log(200), what="the SIGHUP refused")
        synapse.process.stop(timeout=15)  # ... then the host reboots: HAProxy stops too
        synapse.start()  # (before: exit 2, HAProxy never started again)
        assert spread(port, 4) == {"lg-1": 4}
        status = synapse.status()["config"]["last_good"]
        assert "services.web.haproxy.prot" in status["errors"][0]
        said = health(synapse)
        assert said["ok"] and any("last good config" in line for line in said["degraded"])
        assert synapse.metric("synapse_config_last_good") == 1
        assert "event=config_last_good_used" in synapse.log(400)
        check = subprocess.run([str(SYNAPSE), "-c", str(synapse.config_path), "-k"],
                               capture_output=True, text=True, timeout=60)  # fmt: skip
        assert check.returncode == 2 and "prot" in check.stderr  # -k: refused as before

        haproxy["port"] = haproxy.pop("prot")  # fixed: the next SIGHUP loads it
        synapse.write_config()
        synapse.signal(signal.SIGHUP)
        wait(lambda: synapse.status()["config"]["last_good"] is None, what="the fixed file")
        assert synapse.metric("synapse_config_last_good") == 0
        assert spread(port, 4) == {"lg-1": 4}


def test_a_reboot_onto_a_config_haproxy_refuses_serves_the_last_good_config(
    zk: ZooKeeperServer, writer: KazooClient, http_backend_factory
) -> None:
    """Review s39: a file that validates but that `haproxy -c` refuses as a whole (a bad
    `global` line: no service to isolate) was kept as the last good copy all the same, and a
    start with it never started HAProxy when the config file on disk could not serve in its
    place (a service removed): 1,004 of 1,004 requests failed in 10 s. Now the copy is kept
    only once HAProxy runs its config, and such a start runs it."""
    backend = http_backend_factory("lg-2")
    port, api_port = free_port(), free_port()
    register(writer, "/lastgood2/web", backend)
    services = {"web": zk_service(zk, "/lastgood2/web", port),
                "api": zk_service(zk, "/lastgood2/web", api_port)}  # fmt: skip
    with Synapse(services) as synapse:
        wait_serving(port, {"lg-2"})
        haproxy = synapse.config["haproxy"]
        haproxy["global"] = [*haproxy["global"], "bogus-keyword 1"]  # HAProxy refuses it ...
        del synapse.config["services"]["api"]  # ... and the file on disk cannot stand in
        synapse.write_config()
        synapse.signal(signal.SIGHUP)
        wait(lambda: "event=haproxy_config_invalid" in synapse.log(300), what="the refusal")
        assert spread(api_port, 2) == {"lg-2": 2}  # (the running HAProxy stays)
        synapse.process.stop(timeout=15)  # the reboot
        synapse.process.start()
        wait_serving(port, {"lg-2"}, timeout=30)  # (before: nothing served, ever)
        assert spread(api_port, 2) == {"lg-2": 2}  # the last good config, whole
        status = synapse.status()["config"]["last_good"]
        assert "bogus-keyword" in status["errors"][0]
        assert synapse.metric("synapse_config_last_good") == 1
        assert "event=config_last_good_used" in synapse.log(400)
