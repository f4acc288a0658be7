"""A running nerve loads the client of the registries it registers in, no HTTP library, no
pydantic and no PyYAML (its config here is JSON; the last good copy's module loaded it
until session 51: ~0.8 MB).

nerve runs on every host: gRPC + aetcd cost ~13 MB of RSS, aiohttp's client ~10 MB and
pydantic ~9 MB (and ~0.5 s of start between them). A real nerve process registers a service
with an HTTP check in ZooKeeper, then another in etcd (on etcd's JSON gateway, the default,
and on gRPC); a ``sitecustomize`` put on its path
writes the modules it holds when it exits (after SIGTERM): its own, not those of the child
that validated its config with pydantic (that one leaves by ``os._exit``).
"""

from __future__ import annotations

import base64
import textwrap
from pathlib import Path

import pytest
from kazoo.client import KazooClient
from nerve_testlib import (
    NerveProcess,
    etcd_service,
    nerve_config,
    site_probe,
    unique_path,
    until,
    write_config,
    zk_nerve_registered,
)

from smartstack.etcd_http import Target, call
from testbed.etcd import EtcdCluster
from testbed.zookeeper import ZooKeeperServer

HEAVY = {"aiohttp", "grpc", "aetcd", "kazoo", "pydantic", "yaml"}
DUMP = textwrap.dedent(
    """
    import atexit, os, sys

    def _dump():
        with open(os.path.join(os.environ["MODULES_DIR"], f"{os.getpid()}.txt"), "w") as out:
            out.write("\\n".join(sorted(sys.modules)))

    atexit.register(_dump)
    """
)


@pytest.fixture
def modules_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return site_probe(tmp_path, monkeypatch, DUMP, "MODULES_DIR")


def heavy_modules(nerve: NerveProcess, out: Path) -> set[str]:
    """The heavy packages the nerve process held, once it stopped."""
    pid = nerve.pid
    nerve.process.stop(timeout=20)
    names = (out / f"{pid}.txt").read_text().split()
    assert "nerve.daemon" in names  # (the dump is the daemon's)
    return {name.split(".")[0] for name in names} & HEAVY


def test_a_zookeeper_nerve_loads_kazoo_alone(
    modules_dir: Path, zk: ZooKeeperServer, kz: KazooClient, http_backend_factory,
    nerve_process, tmp_path: Path,
) -> None:  # fmt: skip
    port = http_backend_factory().port
    nerve = zk_nerve_registered(nerve_process, zk.hosts, kz, port, tmp_path)
    assert heavy_modules(nerve, modules_dir) == {"kazoo"}


@pytest.mark.parametrize(
    "transport, heavy",
    [
        (None, set()),  # auto: etcd's JSON gateway, over h11 like the HTTP checks
        ("grpc", {"grpc", "aetcd"}),
    ],
)
async def test_an_etcd_nerve_loads_no_kazoo_and_no_http_library(
    modules_dir: Path, etcd: EtcdCluster, http_backend_factory, nerve_process, tmp_path: Path,
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
    assert heavy_modules(nerve, modules_dir) == heavy


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
