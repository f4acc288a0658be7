"""A SIGHUP while the config file is being rewritten in place applies the whole file, not
the part written so far (real synapse, ZooKeeper, HAProxy).

Review s21 measured it: a writer truncated the file, wrote it up to ``  charlie:``, stalled
5 s and wrote the rest while SIGHUPs came every 100 ms; synapse applied the two services
written so far and reloaded HAProxy without charlie (472 requests failed over 6.15 s). The
read now waits for the writer (smartstack.config_read).
"""

from __future__ import annotations

import re
import signal
import threading
import time

from kazoo.client import KazooClient
from synapse_e2e import Synapse, http_get, register, wait_serving, zk_service

from testbed.process import free_port
from testbed.zookeeper import ZooKeeperServer

STALL = 3.0  # the writer's pause, with the file holding the first two services only


def test_a_sighup_during_an_in_place_rewrite_keeps_every_service(
    zk: ZooKeeperServer, writer: KazooClient, http_backend_factory
) -> None:
    names = ("alpha", "bravo", "charlie")
    ports = {name: free_port() for name in names}
    for name in names:
        register(writer, f"/halfwritten/{name}", http_backend_factory(name))
    services = {n: zk_service(zk, f"/halfwritten/{n}", ports[n]) for n in names}
    with Synapse(services) as syn:
        for name in names:
            wait_serving(ports[name], {name})
        text = syn.config_path.read_text()
        cut = text.index("  charlie:")  # (yaml.safe_dump sorts: charlie comes last)
        stop = threading.Event()
        failures: list[str] = []

        def hup_and_call() -> None:
            while not stop.is_set():
                syn.signal(signal.SIGHUP)
                try:
                    status, _ = http_get(ports["charlie"], timeout=3)
                    if status != 200:
                        failures.append(f"HTTP {status}")
                except OSError as exc:
                    failures.append(f"{type(exc).__name__}: {exc}")
                time.sleep(0.1)

        thread = threading.Thread(target=hup_and_call)
        thread.start()
        try:
            with syn.config_path.open("w") as file:  # the same content, written slowly
                file.write(text[:cut])
                file.flush()
                time.sleep(STALL)
                file.write(text[cut:])
            time.sleep(2.0)  # (the reloads the last SIGHUPs started)
        finally:
            stop.set()
            thread.join()
        syn.signal(signal.SIGHUP)
        time.sleep(1.0)
        log = syn.process.log_path.read_text(errors="replace")
        reloaded = re.findall(r"event=config_reloaded .* services=(\d+)", log)
        assert reloaded and set(reloaded) == {"3"}, reloaded
        assert failures == [], failures[:5]
