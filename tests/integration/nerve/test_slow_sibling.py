"""A dead service is withdrawn without waiting for a slower check of the same service: a
real nerve, real ZooKeeper, a real HTTP backend and an exec check that takes 3 s."""

from __future__ import annotations

import time
from pathlib import Path

from kazoo.client import KazooClient
from nerve_testlib import children, nerve_config, unique_path, write_config, zk_service

from testbed.process import wait_until
from testbed.zookeeper import ZooKeeperServer

SLOW = 3.0  # seconds the exec check takes (it passes)


def test_a_fast_failure_withdraws_without_waiting_for_a_slow_sibling(
    zk: ZooKeeperServer, kz: KazooClient, nerve_process, http_backend_factory, tmp_path: Path
) -> None:
    backend = http_backend_factory("web")
    path = unique_path()
    mark = tmp_path / "round.started"
    service = zk_service(zk.hosts, path, backend.port, check_interval=0.5)
    service["checks"].append(
        {"type": "exec", "command": f"touch {mark}; sleep {SLOW}", "timeout": 5}
    )
    nerve = nerve_process(write_config(tmp_path / "nerve.json", nerve_config({"web": service})))
    wait_until(lambda: children(kz, path), 20, what="the registration")
    # Break the service just after a round started (its HTTP check has passed): the
    # next round's HTTP check fails SLOW seconds later, and that failure withdraws it at
    # once. The old round also waited for that round's exec check: SLOW seconds more.
    mark.unlink(missing_ok=True)
    wait_until(mark.exists, 10, what="a round to start")
    time.sleep(0.2)
    backend.set_healthy(False)
    broken = time.monotonic()
    wait_until(lambda: not children(kz, path), 20, what="the withdrawal")
    took = time.monotonic() - broken
    # ~SLOW (the round's end) now, ~2 x SLOW before: the bound halfway leaves a loaded
    # machine room either side (SLOW + 0.8 with SLOW 2 left it ~0.5 s)
    assert took < 1.5 * SLOW, f"withdrawn {took:.2f}s after the service broke"
    nerve.process.stop(timeout=10)
