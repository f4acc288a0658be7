"""A running sidecar synapse (one ZooKeeper service, the default layout, its config in YAML)
holds none of the packages it does not use: no PyYAML (its validating child parses the
file; ~0.8 MB of RSS, loaded by the last good copy's module until session 51), no pydantic
(the plain models), no jinja2 (no template), no gRPC, no aiohttp, and not the HTTP server
and clients of prometheus_client's exposition module. A ``sitecustomize`` put
on its path writes the modules the daemon holds when it exits (after SIGTERM); the forked
child leaves by ``os._exit`` and writes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from kazoo.client import KazooClient
from nerve_testlib import site_probe
from synapse_e2e import Synapse, nerve_record, wait_serving

from testbed.process import free_port
from testbed.zookeeper import ZooKeeperServer

UNUSED = {"yaml", "pydantic", "jinja2", "grpc", "aetcd", "aiohttp", "docker"}
DUMP = """
import atexit, os, sys

def _dump():
    with open(os.path.join(os.environ["MODULES_DIR"], f"{os.getpid()}.txt"), "w") as out:
        out.write("\\n".join(sorted(sys.modules)))

atexit.register(_dump)
"""


def test_a_sidecar_synapse_holds_no_package_it_does_not_use(
    zk: ZooKeeperServer, writer: KazooClient, http_backend_factory, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    out = site_probe(tmp_path, monkeypatch, DUMP, "MODULES_DIR")
    backend = http_backend_factory("a")
    writer.create("/lean/web/a_", nerve_record(backend), sequence=True, makepath=True)
    port = free_port()
    discovery = {"method": "zookeeper", "hosts": [zk.hosts], "path": "/lean/web"}
    syn = Synapse({"web": {"discovery": discovery, "haproxy": {"port": port}}})
    with syn:
        wait_serving(port, {"a"})
        assert "synapse_" in syn.admin("/metrics")
        pid = syn.process.pid
        syn.process.stop(15)
    names = (out / f"{pid}.txt").read_text().split()
    assert "synapse.daemon" in names and "kazoo" in names  # (the daemon's own dump)
    assert {name.split(".")[0] for name in names} & UNUSED == set()
    # nor prometheus_client's exposition module with its HTTP servers and clients (~4 MB:
    # smartstack.prometheus_lean), though /metrics answered
    assert "prometheus_client.exposition" not in names and "http.server" not in names
