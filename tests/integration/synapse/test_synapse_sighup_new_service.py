"""A service a SIGHUP adds gets its frontend with its servers, never before (real synapse,
ZooKeeper, HAProxy 2.6).

It was handed over before its watcher had reported: the reload bound its frontend with an
empty backend, which answered 503 until the report, and, for servers only a reload can add
(here ``balance static-rr``), until the next reload ``restart_interval`` later (measured:
~5,900 requests answered 503 over ~3 s, restart_interval 3, coalesce_ms 0; with a
coalesce window longer than the registry's read the report came in time). Now it waits
for its first report, as at a start.
"""

from __future__ import annotations

import signal
import time
from collections import Counter

from kazoo.client import KazooClient
from synapse_e2e import Synapse, http_get, register, wait_serving, zk_service

from testbed.process import free_port
from testbed.zookeeper import ZooKeeperServer

RESTART_INTERVAL = 3.0


def test_a_service_added_by_sighup_answers_only_once_it_has_servers(
    zk: ZooKeeperServer, writer: KazooClient, http_backend_factory
) -> None:
    a, b = http_backend_factory("a"), http_backend_factory("b")
    register(writer, "/sighup/web", a)
    register(writer, "/sighup/api", b)
    web, api = free_port(), free_port()
    haproxy = {"restart_interval": RESTART_INTERVAL, "coalesce_ms": 0}  # (the default)
    with Synapse({"web": zk_service(zk, "/sighup/web", web)}, haproxy=haproxy,
                 startup_wait=30) as syn:  # fmt: skip
        wait_serving(web, {"a"})
        time.sleep(RESTART_INTERVAL)  # (setup: the SIGHUP's reload is not rate-limited)
        syn.config["services"]["api"] = zk_service(
            zk, "/sighup/api", api, backend=["balance static-rr"]
        )
        syn.write_config()
        syn.signal(signal.SIGHUP)
        seen: Counter[str] = Counter()
        deadline = time.monotonic() + 20
        while seen["b"] < 5 and time.monotonic() < deadline:
            try:
                status, body = http_get(api, timeout=3)
            except OSError:
                seen["not bound yet"] += 1
                time.sleep(0.01)
                continue
            seen[body if status == 200 else f"http-{status}"] += 1
        assert seen["b"] == 5, seen
        assert set(seen) <= {"b", "not bound yet"}, f"answered before it had servers: {seen}"
