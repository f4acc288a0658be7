"""Issue 11 end to end: a synapse config of the shapes real Airbnb/Yelp files have, nerve
records in a real ZooKeeper, and the haproxy.cfg synapse writes passes ``haproxy -c``.

Shapes covered: ERB ``<%= ENV[...] %>`` in the config file, a top-level
``haproxy.use_nerve_weights``, a ``server_options`` hash, Yelp-style label keys
(``region:my_region``) with ``label_filters``, a record whose ``haproxy_server_options``
is an object, and ``method: zookeeper_dns``.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from kazoo.client import KazooClient
from synapse_e2e import Synapse, nerve_record, wait, wait_serving

from testbed.process import free_port
from testbed.zookeeper import ZooKeeperServer

ZK_FROM_ENV = '<%= ENV["E2E_ZK_HOSTS"] %>'


def register(writer: KazooClient, path: str, data: bytes, name: str) -> str:
    return writer.create(f"{path}/{name}_", data, sequence=True, makepath=True)


def discovery(path: str, **extra: object) -> dict:
    return {"method": "zookeeper", "hosts": [ZK_FROM_ENV], "path": path, **extra}


def server_lines(config: str, backend: str) -> list[str]:
    lines = config.splitlines()
    start = lines.index(f"backend {backend}")
    body = []
    for line in lines[start + 1 :]:
        if line and not line[0].isspace():
            break
        body.append(line.strip())
    return [line for line in body if line.startswith("server ")]


def test_airbnb_shaped_config_with_nerve_records(
    zk: ZooKeeperServer,
    writer: KazooClient,
    http_backend_factory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("E2E_ZK_HOSTS", zk.hosts)
    west, east, odd, heavy, named = (
        http_backend_factory(n) for n in ("west", "east", "odd", "heavy", "named")
    )
    region = {"region:my_region": "uswest1", "superregion:my_superregion": "us"}
    register(writer, "/airbnb/regional", nerve_record(west, labels=region), "west")
    register(writer, "/airbnb/regional", nerve_record(east, labels={"region:my_region": "x"}),
             "east")  # fmt: skip
    odd_record = nerve_record(odd, labels=region, haproxy_server_options={"weight": 5})
    register(writer, "/airbnb/regional", odd_record, "odd")
    register(writer, "/airbnb/weighted", nerve_record(heavy, weight=7), "heavy")
    by_name = json.dumps({"host": "localhost", "port": named.port, "name": "named"}).encode()
    register(writer, "/airbnb/resolved", by_name, "named")
    regional_port, weighted_port, resolved_port = free_port(), free_port(), free_port()
    services = {
        "regional": {
            "discovery": discovery(
                "/airbnb/regional",
                label_filters=[{"label": "region:my_region", "value": "uswest1"}],
            ),
            "haproxy": {"port": regional_port, "bind_address": "127.0.0.1"},
        },
        "weighted": {
            "discovery": discovery("/airbnb/weighted"),
            "haproxy": {"port": weighted_port, "bind_address": "127.0.0.1",
                        "server_options": {"check": True, "inter": 2000}},
        },
        "resolved": {
            "discovery": discovery("/airbnb/resolved", method="zookeeper_dns", check_interval=1),
            "haproxy": {"port": resolved_port, "bind_address": "127.0.0.1"},
        },
    }  # fmt: skip
    with Synapse(services, haproxy={"use_nerve_weights": True}) as syn:
        wait_serving(regional_port, {"west", "odd"})  # label filter on a key with ':'
        wait_serving(weighted_port, {"heavy"})
        wait(lambda: server_lines(syn.haproxy_config(), "resolved"), what="resolved servers")
        config = syn.haproxy_config()

        # Labels steer selection only: they never reach haproxy.cfg.
        for needle in ("my_region", "uswest1", "superregion"):
            assert needle not in config
        # The record with object options kept its server, without the options; logged
        # and counted once.
        [odd_line] = [line for line in server_lines(config, "regional") if "odd_" in line]
        assert "weight 5" not in odd_line
        assert syn.metric("synapse_ignored_record_fields_total", service="regional") == 1
        assert syn.metric("synapse_bad_records_total", service="regional") == 0
        # Top-level use_nerve_weights: weight from the record; the options hash is ignored.
        [heavy_line] = server_lines(config, "weighted")
        assert "weight 7" in heavy_line and "inter" not in heavy_line
        # zookeeper_dns: the record's DNS name became addresses, named after the record.
        resolved = server_lines(config, "resolved")
        assert f"server named_127.0.0.1:{named.port} 127.0.0.1:{named.port}" in " ".join(resolved)
        assert "localhost" not in " ".join(resolved)
        assert syn.status()["services"]["resolved"]["watcher"]["method"] == "zookeeper_dns"

        haproxy = shutil.which("haproxy")
        assert haproxy is not None
        check = subprocess.run(
            [haproxy, "-c", "-f", str(syn.dir / "haproxy.cfg")],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert check.returncode == 0, check.stdout + check.stderr
