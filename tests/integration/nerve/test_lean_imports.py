"""A running nerve loads the client of the registries it registers in, and no HTTP library.

nerve runs on every host: gRPC + aetcd cost ~13 MB of RSS and aiohttp's client ~10 MB (and
~0.4 s of start between them). A real nerve process (`-X importtime` through the
environment, which logs every import as it happens, lazy ones included) registers a
service with an HTTP check in ZooKeeper, then another in etcd (on etcd's JSON gateway, the
default, and on gRPC); what it imported is read from its log once the registration is seen.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest
from kazoo.client import KazooClient
from nerve_testlib import (
    children,
    etcd_service,
    nerve_config,
    unique_path,
    until,
    write_config,
    zk_service,
)

from smartstack.etcd_http import Target, call
from testbed.etcd import EtcdCluster
from testbed.process import wait_until
from testbed.zookeeper import ZooKeeperServer

HEAVY = {"aiohttp", "grpc", "aetcd", "kazoo"}
IMPORT_LINE = re.compile(r"^import time:\s+\d+ \|\s+\d+ \|\s*([\w.]+)\s*$", re.MULTILINE)


def top_level_imports(log: str) -> set[str]:
    return {name.split(".")[0] for name in IMPORT_LINE.findall(log)}


@pytest.fixture
def traced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPROFILEIMPORTTIME", "1")


def test_a_zookeeper_nerve_loads_kazoo_alone(
    traced: None, zk: ZooKeeperServer, kz: KazooClient, http_backend_factory, nerve_process,
    tmp_path: Path,
) -> None:  # fmt: skip
    backend = http_backend_factory()
    path = unique_path()
    config = nerve_config({"web": zk_service(zk.hosts, path, backend.port)})
    nerve = nerve_process(write_config(tmp_path / "nerve.json", config))
    wait_until(lambda: children(kz, path), 20, what="the registration in ZooKeeper")
    loaded = top_level_imports(nerve.log())
    assert "nerve" in loaded  # (the trace is there)
    assert loaded & HEAVY == {"kazoo"}


@pytest.mark.parametrize(
    "transport, heavy",
    [
        (None, set()),  # auto: etcd's JSON gateway, over h11 like the HTTP checks
        ("grpc", {"grpc", "aetcd"}),
    ],
)
async def test_an_etcd_nerve_loads_no_kazoo_and_no_http_library(
    traced: None, etcd: EtcdCluster, http_backend_factory, nerve_process, tmp_path: Path,
    transport: str | None, heavy: set[str],
) -> None:  # fmt: skip
    backend = http_backend_factory()
    path = unique_path()
    chosen = {"etcd_transport": transport} if transport else {}
    config = nerve_config({"web": etcd_service(etcd.endpoints, path, backend.port, **chosen)})
    nerve = nerve_process(write_config(tmp_path / "nerve.json", config))
    prefix = path.encode()
    request = {"key": _b64(prefix), "range_end": _b64(prefix + b"\xff"), "count_only": True}
    target = Target("127.0.0.1", etcd.port, None, {})

    async def registered() -> bool:
        return int((await call(target, "/v3/kv/range", request)).get("count", 0)) > 0

    await until(registered, what=f"the registration under {path} in etcd")
    loaded = top_level_imports(nerve.log())
    assert "nerve" in loaded
    assert loaded & HEAVY == heavy


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
