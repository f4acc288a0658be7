"""One nerve per config (smartstack.instance_lock): real nerve processes, real ZooKeeper.

A second nerve on the same config deleted the first one's node as a leftover; the first
stood aside, and once the second stopped the registration was gone for good while the first
said "registered" (review s26 "two copies overlap"). Now the second waits for the first
one's lock in ``<state_dir>/nerve.lock`` and exits 1 with a message when the first does not
exit; when it does meanwhile (a restart overlap), the second starts and registers.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

from kazoo.client import KazooClient
from nerve_testlib import (
    NERVE_BIN,
    children,
    nerve_config,
    unique_path,
    until,
    write_config,
    zk_service,
)

from smartstack.instance_lock import WAIT_ENV
from testbed.process import ManagedProcess, free_port
from testbed.zookeeper import ZooKeeperServer


def second_copy(config: Path, workdir: Path, wait_s: float) -> ManagedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", WAIT_ENV: str(wait_s)}
    return ManagedProcess([NERVE_BIN, "-c", config], workdir, "nerve-b", env).start()


def first_registered(zk: ZooKeeperServer, tmp_path: Path, nerve_process) -> tuple[Path, str, Any]:
    """The first nerve (one always-healthy service, its own state_dir), registered."""
    path = unique_path()
    config = nerve_config({"web": zk_service(zk.hosts, path, free_port(), checks=[])},
                          state_dir=str(tmp_path / "state"))  # fmt: skip
    config_path = write_config(tmp_path / "nerve.json", config)
    first = nerve_process(config_path)
    first.wait_for_log("znode_created")
    return config_path, path, first


async def test_second_nerve_on_one_config_exits_1_and_leaves_the_node_alone(
    zk: ZooKeeperServer, kz: KazooClient, tmp_path: Path, nerve_process
) -> None:
    config, path, first = first_registered(zk, tmp_path, nerve_process)
    lock = tmp_path / "state" / "nerve.lock"
    assert lock.read_text().strip() == str(first.pid)
    nodes = children(kz, path)
    assert len(nodes) == 1
    other = second_copy(config, tmp_path, 3)
    try:
        assert other.wait(60) == 1, other.log_tail()
    finally:
        other.kill()
    log = other.log_path.read_text()
    assert "instance_lock_waiting" in log
    assert f"nerve pid {first.pid} already runs with {config}" in log
    assert "znode" not in log  # it never touched the registry
    assert children(kz, path) == nodes and first.process.alive


async def test_second_nerve_starts_once_the_first_exits_during_its_wait(
    zk: ZooKeeperServer, kz: KazooClient, tmp_path: Path, nerve_process
) -> None:
    config, path, first = first_registered(zk, tmp_path, nerve_process)
    other = second_copy(config, tmp_path, 60)
    try:
        await until(lambda: "instance_lock_waiting" in other.log_path.read_text(), timeout=30,
                    what="the second nerve waiting for the lock")  # fmt: skip
        assert other.alive and len(children(kz, path)) == 1
        first.signal(signal.SIGTERM)
        assert first.wait(20) == 0
        await until(lambda: "znode_created" in other.log_path.read_text(), timeout=40,
                    what="the second nerve registering")  # fmt: skip
        assert "instance_lock_taken" in other.log_path.read_text()
        await until(lambda: len(children(kz, path)) == 1, what="its node")
        assert other.alive
    finally:
        other.stop(timeout=20)
