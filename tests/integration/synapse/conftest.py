"""Fixtures of the synapse tests (the servers themselves come from tests/conftest.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
from kazoo.client import KazooClient
from synapse_e2e import CREATED, processes_using

from smartstack.zookeeper import ZooKeeperConnection
from testbed.zookeeper import ZooKeeperServer


@pytest.fixture(scope="module")
def writer(zk: ZooKeeperServer) -> Iterator[KazooClient]:
    """A plain kazoo client on the module's ZooKeeper that writes records by hand."""
    client = KazooClient(hosts=zk.hosts)
    client.start(timeout=30)
    yield client
    client.stop()
    client.close()


@pytest.fixture(autouse=True)
def _no_synapse_left_running() -> Iterator[None]:
    """Every synapse a test started, and its HAProxy, is gone when the test ends.

    A test that fails half-way (or forgets its cleanup) would otherwise leave a managed
    HAProxy running: it lives in its own session and outlives a killed synapse.
    """
    yield
    leftovers = {str(s.dir): processes_using(s.dir) for s in CREATED}
    while CREATED:
        CREATED.pop().cleanup()
    leftovers = {d: pids for d, pids in leftovers.items() if pids}
    assert not leftovers, f"processes left running by the test (now killed): {leftovers}"


@pytest.fixture
async def conn(zk) -> AsyncIterator[ZooKeeperConnection]:
    """A connected ZooKeeperConnection to the module's server (closed after the test)."""
    connection = ZooKeeperConnection([zk.hosts], asyncio.get_running_loop())
    connection.start()
    await connection.wait_connected(30)
    yield connection
    await connection.close()
