"""A sequential znode name already taken by a node created by name (a registry copied to a
new ensemble with the records' names, review s35 migrate): ZooKeeper names a sequential
child by the parent's counter, which a create by name advances by one but does not skip
past. Real ZooKeeper, nerve in process."""

from __future__ import annotations

import json

from kazoo.client import KazooClient
from nerve_testlib import children, nerve_config, running_nerve, unique_path, until, zk_service

from testbed.zookeeper import ZooKeeperServer


async def test_a_sequential_name_taken_by_a_copied_node_is_skipped(
    zk: ZooKeeperServer, kz: KazooClient, http_backend_factory
) -> None:
    backend = http_backend_factory()
    path = unique_path()
    kz.ensure_path(path)
    # Copied as a migration tool does (by name, persistent): the parent's counter is now 1,
    # the very number this copy carries; another instance's copy with a free number.
    copied = "i-test_0000000001"
    record = {"host": "127.0.0.1", "port": backend.port, "name": "i-test"}
    kz.create(f"{path}/{copied}", json.dumps(record).encode())
    service = zk_service(zk.hosts, path, backend.port)
    async with running_nerve(nerve_config({"web": service})) as daemon:
        reporter = daemon.services["web"].reporter
        # Before: NodeExistsError, then a NoNodeError taking "i-test_" over, retried for as
        # long as nothing else created or deleted a child of the path (here for ever).
        await until(lambda: reporter.registered and reporter.in_sync, timeout=5,
                    what="the registration")  # fmt: skip
        (ours,) = [n for n in children(kz, path) if n != copied] or [None]
        assert ours is not None and ours.startswith("i-test_")
        assert reporter.node == f"{path}/{ours}"
        assert kz.get(f"{path}/{ours}")[1].ephemeralOwner != 0  # nerve's own, ephemeral
