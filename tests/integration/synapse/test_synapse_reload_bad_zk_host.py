"""A SIGHUP whose discovery.hosts kazoo cannot parse is refused: the running watcher keeps
following the registry (real synapse, ZooKeeper, HAProxy).

Review s21: hosts ["127.0.0.1:PORT,"] was `config_reloaded ok=True`; the watcher then
crash-looped (ValueError: bad hostname) and the service froze on its previous servers: a
withdrawn server kept half the traffic.
"""

from __future__ import annotations

import signal
import time
from collections import Counter

from kazoo.client import KazooClient
from synapse_e2e import Synapse, http_get, register, wait_serving, zk_service

from testbed.process import free_port, wait_until
from testbed.zookeeper import ZooKeeperServer


def test_a_sighup_with_a_bad_zk_host_is_refused_and_the_watcher_follows_on(
    zk: ZooKeeperServer, writer: KazooClient, http_backend_factory
) -> None:
    a, b = http_backend_factory("a"), http_backend_factory("b")
    register(writer, "/badhost/web", a)
    withdrawn = register(writer, "/badhost/web", b)
    port = free_port()
    with Synapse({"web": zk_service(zk, "/badhost/web", port)}) as syn:
        wait_serving(port, {"a", "b"})
        syn.config["services"]["web"]["discovery"]["hosts"] = [f"{zk.hosts},"]
        syn.write_config()
        mark = len(syn.process.log_path.read_text(errors="replace"))
        syn.signal(signal.SIGHUP)

        def since() -> str:
            return syn.process.log_path.read_text(errors="replace")[mark:]

        wait_until(lambda: "event=config_reload_failed" in since(), 30, what="the refusal")
        assert f"hosts[0]: '{zk.hosts},' is not host:port" in since(), since()
        writer.delete(withdrawn)
        deadline = time.monotonic() + 15
        served: Counter[str] = Counter()
        while time.monotonic() < deadline and served["a"] < 20:
            status, body = http_get(port, timeout=3)
            served[body if status == 200 else f"http-{status}"] += 1
            if body == "b":
                served.clear()  # (until the withdrawal has reached HAProxy)
            time.sleep(0.05)
        assert served["a"] == 20, served
        assert "config_reloaded" not in since() and "crashed" not in since(), since()
