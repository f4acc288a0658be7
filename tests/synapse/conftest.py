"""Fixtures of the synapse tests (the servers themselves come from tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kazoo.client import KazooClient

from smartstack.localservers.zookeeper import ZooKeeperServer


@pytest.fixture(scope="module")
def writer(zk: ZooKeeperServer) -> Iterator[KazooClient]:
    """A plain kazoo client on the module's ZooKeeper that writes records by hand."""
    client = KazooClient(hosts=zk.hosts)
    client.start(timeout=30)
    yield client
    client.stop()
    client.close()
