"""Fixtures for nerve's tests (helpers live in nerve_testlib.py).

Real servers come from tests/conftest.py (`zk`, `zk_ensemble`, `etcd`, `etcd_cluster`,
`http_backend_factory`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kazoo.client import KazooClient
from nerve_testlib import TIMEOUT, NerveProcess

from testbed.zookeeper import ZooKeeperServer


@pytest.fixture(scope="module")
def kz(zk: ZooKeeperServer) -> Iterator[KazooClient]:
    """An observer client on the module's ZooKeeper."""
    client = KazooClient(hosts=zk.hosts)
    client.start(timeout=TIMEOUT)
    yield client
    client.stop()
    client.close()


@pytest.fixture
def nerve_process(tmp_path: Path) -> Iterator[Callable[[Path], NerveProcess]]:
    started: list[NerveProcess] = []

    def start(config_path: Path) -> NerveProcess:
        proc = NerveProcess(config_path, tmp_path, name=f"nerve{len(started) + 1}")
        started.append(proc)
        return proc.start()

    yield start
    for proc in started:
        proc.process.kill()
