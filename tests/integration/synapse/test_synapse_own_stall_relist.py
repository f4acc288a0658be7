"""synapse frozen (SIGSTOP, a VM pause, `docker pause`) past its ZooKeeper session renews
its list at once on resume: ``relist_jitter`` spreads a fleet's re-lists after a registry
outage, but after its own stall nobody else re-lists, and its list is as old as the stall
(was: a random part of the window more; 0.8-1.6 s of a dead server kept UP at the default
2 s, here a window no test would wait out).

Real synapse process and HAProxy, a real ZooKeeper that grants 3 s sessions."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kazoo.client import KazooClient
from synapse_e2e import Synapse, register, wait_serving, zk_service

from testbed.process import free_port
from testbed.zookeeper import ZooKeeperServer

SESSION_S = 3.0  # what the server grants (synapse asks 10 s)


@pytest.fixture(scope="module")
def zk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ZooKeeperServer]:
    server = ZooKeeperServer(workdir=tmp_path_factory.mktemp("zk"), extra_config=[
        f"maxSessionTimeout={int(SESSION_S * 1000)}"]).start()  # fmt: skip
    yield server
    server.stop()


def test_after_its_own_freeze_the_list_is_renewed_at_once(
    zk: ZooKeeperServer, writer: KazooClient, http_backend_factory: Any
) -> None:
    a, b = http_backend_factory("a"), http_backend_factory("b")
    path = "/stall/web"
    child_a = register(writer, path, a)
    register(writer, path, b)
    port = free_port()
    service = zk_service(zk, path, port)
    service["discovery"]["relist_jitter"] = 600
    with Synapse({"web": service}) as syn:
        wait_serving(port, {"a", "b"})
        syn.signal(signal.SIGSTOP)
        try:
            time.sleep(SESSION_S + 2)  # past synapse's session: its watches went with it
            writer.delete(child_a)  # a's nerve withdrew it meanwhile (a still answers)
            time.sleep(0.5)
        finally:
            syn.signal(signal.SIGCONT)
        resumed = time.monotonic()
        wait_serving(port, {"b"}, timeout=30)
        assert time.monotonic() - resumed < 5
        assert "zk_relist_after_stall" in syn.log(400)
