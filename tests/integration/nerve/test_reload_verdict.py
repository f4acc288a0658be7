"""A SIGHUP that edits a healthy service's checks together with its record, its registry or
its name keeps the checks' verdict: the registration never leaves the registry (synapse
would take the server out of HAProxy until the new checks pass `rise` times). In process,
real HTTP checks, against real ZooKeeper and etcd."""

from __future__ import annotations

import json
from typing import Any

import aetcd
import pytest
from kazoo.client import KazooClient
from nerve_testlib import (
    children_seen,
    etcd_service,
    nerve_config,
    running_nerve,
    unique_path,
    until,
    zk_service,
)

from nerve.config import NerveConfig
from nerve.daemon import NerveDaemon
from nerve.service import Service
from smartstack.record import Registration, etcd_key
from testbed.etcd import EtcdCluster
from testbed.zookeeper import ZooKeeperServer

# Withdrawn and started anew, the service would be out for RISE rounds at least.
RISE, INTERVAL = 3, 0.3
CHECK = {"type": "http", "uri": "/health", "timeout": 1, "rise": RISE, "fall": 2}


def edited(config: dict, name: str, service: dict, check: dict, top: dict) -> NerveConfig:
    """``config`` with web's block and check changed, web renamed to ``name``, ``top``'s keys."""
    new = json.loads(json.dumps(config))
    block = new["services"].pop("web")
    block.update(service)
    block["checks"][0].update(check)
    new["services"][name] = block
    return NerveConfig.model_validate({**new, **top})


def shown(name: str) -> str:
    """How the reload's summary names the service."""
    return name if name == "web" else f"web->{name}"


async def settled_anew(daemon: NerveDaemon, service: Service) -> None:
    await until(lambda: not daemon._retiring, what="the old registration retired")
    await until(lambda: service.reporter.registered and service.reporter.in_sync, what="written")


ZK_EDITS = [
    pytest.param("web", {"weight": 20}, {"timeout": 0.8}, {}, "re_registered", id="weight+timeout"),
    pytest.param("web", {"labels": {"az": "a"}}, {"rise": 4}, {}, "re_registered",
                 id="labels+rise"),
    pytest.param("web", {"zk_session_timeout": 3.0}, {"uri": "/ready"}, {}, "re_registered",
                 id="session_timeout+uri"),
    pytest.param("web", {}, {"fall": 3}, {"instance_id": "i-b"}, "re_registered",
                 id="instance_id+fall"),
    pytest.param("web_main", {}, {}, {}, "renamed", id="renamed"),
    pytest.param("web_main", {}, {"headers": {"X-A": "1"}}, {}, "renamed", id="renamed+headers"),
]  # fmt: skip


@pytest.mark.parametrize("name, service, check, top, outcome", ZK_EDITS)
async def test_zk_sighup_editing_checks_with_the_record_registry_or_name_keeps_the_node(
    zk: ZooKeeperServer,
    kz: KazooClient,
    http_backend_factory,
    name: str,
    service: dict,
    check: dict,
    top: dict[str, Any],
    outcome: str,
) -> None:
    backend = http_backend_factory()
    path = unique_path()
    block = zk_service(zk.hosts, path, backend.port, check_interval=INTERVAL, weight=10,
                       checks=[dict(CHECK)])  # fmt: skip
    config = nerve_config({"web": block})
    async with running_nerve(config) as daemon:
        await until(lambda: kz.get_children(path), what="registration")
        await until(lambda: daemon.services["web"].reporter.in_sync, what="settled")
        with children_seen(kz, path) as seen:
            summary = await daemon.reload(edited(config, name, service, check, top))
            new = daemon.services[name]
            healthy_at_once = new.state.healthy  # before any round of the new checks
            await settled_anew(daemon, new)
            [node] = kz.get_children(path)
        assert all(seen), seen  # never a children list without the server
        assert healthy_at_once and summary[outcome] == [shown(name)]
        record = json.loads(kz.get(f"{path}/{node}")[0])
        assert (record["weight"], record["name"]) == (
            service.get("weight", 10),
            top.get("instance_id", "i-test"),
        )


ETCD_EDITS = [
    pytest.param("web", "json", {"weight": 20}, {"timeout": 0.8}, "re_registered",
                 id="weight+timeout"),
    pytest.param("web", "json", {"etcd_lease_ttl": 3}, {"rise": 4}, "re_registered",
                 id="lease_ttl+rise"),
    pytest.param("web", "grpc", {"etcd_lease_ttl": 3}, {"uri": "/ready"}, "re_registered",
                 id="grpc-lease_ttl+uri"),
    pytest.param("web_main", "json", {}, {"timeout": 0.8}, "renamed", id="renamed+timeout"),
]  # fmt: skip


@pytest.mark.parametrize("name, transport, service, check, outcome", ETCD_EDITS)
async def test_etcd_sighup_editing_checks_with_the_record_registry_or_name_keeps_the_key(
    etcd: EtcdCluster,
    http_backend_factory,
    name: str,
    transport: str,
    service: dict,
    check: dict,
    outcome: str,
) -> None:
    backend = http_backend_factory()
    path = unique_path()
    block = etcd_service(etcd.endpoints, path, backend.port, check_interval=INTERVAL, weight=10,
                         checks=[dict(CHECK)], etcd_transport=transport)  # fmt: skip
    config = nerve_config({"web": block})
    key = etcd_key(path, Registration("127.0.0.1", backend.port, "i-test")).encode()
    client = aetcd.Client(host=etcd.host, port=etcd.port, timeout=2)
    async with client, running_nerve(config) as daemon:
        first = await until(lambda: client.get(key), what="registration")
        await until(lambda: daemon.services["web"].reporter.in_sync, what="settled")
        summary = await daemon.reload(edited(config, name, service, check, {}))
        new = daemon.services[name]
        healthy_at_once = new.state.healthy
        await settled_anew(daemon, new)
        kv = await client.get(key)
        assert kv is not None
        # Never deleted in between: a delete and a new put would give a new create_revision.
        assert kv.create_revision == first.create_revision
        assert healthy_at_once and summary[outcome] == [shown(name)]
        assert json.loads(kv.value)["weight"] == service.get("weight", 10)
