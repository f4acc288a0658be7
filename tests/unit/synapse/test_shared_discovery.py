"""Two services watching the same registry path (web given api's path, a copy-paste typo)
silently serve the same servers: the loader warns, naming both; it is not an error (some
configs do it on purpose). Pure logic plus the loader (no daemons)."""

from __future__ import annotations

import json
from pathlib import Path

from synapse.config import load_synapse_config

HAPROXY = {"config_file_path": "/tmp/x.cfg", "reload_command": "true"}
ZK = ["127.0.0.1:2181"]
AZ1 = [{"label": "zone", "value": "az1"}]


def zk(path: str, hosts: list[str] = ZK, **more: object) -> dict:
    return {"discovery": {"method": "zookeeper", "path": path, "hosts": hosts, **more}}


def shared(tmp_path: Path, services: dict) -> list[str]:
    path = tmp_path / "synapse.json"
    path.write_text(json.dumps({"services": services, "haproxy": HAPROXY}))
    _, warnings = load_synapse_config(path)
    return [w.removeprefix(f"{path}: ") for w in warnings if "watch the same" in w]


def test_a_service_given_another_ones_path_is_named_with_it(tmp_path: Path) -> None:
    services = {"web": zk("/svc/api/", label_filters=AZ1), "api": zk("/svc/api", label_filters=AZ1),
                "db": zk("/svc/db")}  # fmt: skip
    assert shared(tmp_path, services) == [
        "services.api and services.web watch the same zookeeper path /svc/api on "
        "127.0.0.1:2181 with the same label_filters: they get the same servers "
        "(a copied path? fine if on purpose)"
    ]


def test_etcd_prefixes_are_compared_too(tmp_path: Path) -> None:
    etcd = {"method": "etcd", "path": "/svc/api", "endpoints": ["127.0.0.1:2379"]}
    [line] = shared(tmp_path, {"web": {"discovery": etcd}, "api": {"discovery": dict(etcd)}})
    assert line.startswith("services.api and services.web watch the same etcd path /svc/api")


def test_what_changes_the_servers_served_keeps_them_apart(tmp_path: Path) -> None:
    services = {
        "api": zk("/svc/api", label_filters=AZ1),
        "api_az2": zk("/svc/api", label_filters=[{"label": "zone", "value": "az2"}]),
        "api_all": zk("/svc/api"),  # no filters: all zones, a different set
        "api_other_zk": zk("/svc/api", hosts=["127.0.0.2:2181"], label_filters=AZ1),
        "api_admin": {**zk("/svc/api", label_filters=AZ1), "backend_port_override": 9000},
        "api_grpc": zk("/svc/api", label_filters=AZ1, decode={"endpoint_name": "grpc"}),
        "static": {"discovery": {"method": "base"}},
        "static2": {"discovery": {"method": "base"}},
    }
    assert shared(tmp_path, services) == []
