"""A SIGHUP that moves a healthy service's address (its checks with it) keeps the old
registration while its own checks, still at the old address, pass, until the new address
has passed `rise` checks and is registered (make before break). Before, the old one was
withdrawn first: registered nowhere for `rise` intervals. The old address failing its checks
meanwhile, maintenance, and a second SIGHUP during the move. In process, real HTTP checks,
against real ZooKeeper and etcd."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aetcd
import nerve_testlib as lib
import pytest
from kazoo.client import KazooClient
from nerve_testlib import children, children_seen, until

from nerve.config import NerveConfig
from nerve.daemon import NerveDaemon
from smartstack.logs import _FIELDS
from smartstack.record import etcd_prefix
from testbed.etcd import EtcdCluster
from testbed.zookeeper import ZooKeeperServer

RISE, FALL, INTERVAL = 3, 2, 0.3  # withdrawn first, out for RISE rounds (~0.9 s) at least
CHECK = {"type": "http", "uri": "/health", "timeout": 1, "rise": RISE, "fall": FALL}


def zk_web(zk: ZooKeeperServer, path: str, port: int, **extra: object) -> dict:
    web = lib.zk_service(zk.hosts, path, port, check_interval=INTERVAL, checks=[CHECK], **extra)
    return lib.nerve_config({"web": web})


def moved_to(config: dict, port: int) -> NerveConfig:
    new = json.loads(json.dumps(config))
    new["services"]["web"]["port"] = port
    return NerveConfig.model_validate(new)


def zk_ports(kz: KazooClient, path: str) -> list[int]:
    return sorted(json.loads(kz.get(f"{path}/{c}")[0])["port"] for c in children(kz, path))


def said(caplog: pytest.LogCaptureFixture, name: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == name]


def outcome(caplog: pytest.LogCaptureFixture) -> str | None:
    done = said(caplog, "address_move_done")
    return str(getattr(done[-1], _FIELDS)["outcome"]) if done else None


async def moving(daemon: NerveDaemon, caplog: pytest.LogCaptureFixture, new: NerveConfig) -> None:
    await daemon.reload(new)
    await until(lambda: said(caplog, "address_move_started"), what="the move started")


NODES = [
    pytest.param({}, id="sequential"),
    pytest.param({"node_type": "ephemeral"}, id="fixed_name"),  # the new one takes it over
    pytest.param({"use_path_encoding": True}, id="path_encoding"),
]


@pytest.mark.parametrize("nodes", NODES)
async def test_zk_a_moved_address_keeps_the_old_node_until_the_new_one_is_written(
    zk: ZooKeeperServer,
    kz: KazooClient,
    http_backend_factory,
    caplog: pytest.LogCaptureFixture,
    nodes: dict,
) -> None:
    caplog.set_level(logging.INFO, logger="nerve")
    old, new = http_backend_factory(), http_backend_factory()  # the app answers on both
    path = lib.unique_path()
    config = zk_web(zk, path, old.port, **nodes)
    async with lib.running_nerve(config) as daemon:
        await until(lambda: zk_ports(kz, path) == [old.port], what="registered")
        with children_seen(kz, path) as seen:
            await daemon.reload(moved_to(config, new.port))
            await until(lambda: zk_ports(kz, path) == [new.port], what="the new node alone")
            await until(lambda: not daemon._retiring, what="the old registration retired")
        assert seen and all(seen), f"registered nowhere on the way: {seen}"
        await until(lambda: outcome(caplog) == "written", what="the move's end said")
        # (a fixed name: the old one's withdrawal left the node the new one took over)
        assert zk_ports(kz, path) == [new.port]
        assert daemon.services["web"].status()["registered"] is True


async def test_zk_the_old_address_failing_during_the_move_is_withdrawn_by_its_checks(
    zk: ZooKeeperServer, kz: KazooClient, http_backend_factory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="nerve")
    old, new = http_backend_factory(), http_backend_factory()
    new.set_healthy(False)  # the app not up at its new port yet
    path = lib.unique_path()
    config = zk_web(zk, path, old.port)
    async with lib.running_nerve(config) as daemon:
        await until(lambda: zk_ports(kz, path) == [old.port], what="registered")
        await moving(daemon, caplog, moved_to(config, new.port))
        await asyncio.sleep(RISE * INTERVAL * 2)
        assert zk_ports(kz, path) == [old.port]  # kept: its checks still pass
        old.set_healthy(False)
        await until(lambda: zk_ports(kz, path) == [], what="withdrawn after `fall` failures")
        await until(lambda: outcome(caplog) == "old_failed", what="the move's end said")
        new.set_healthy(True)
        await until(lambda: zk_ports(kz, path) == [new.port], what="the new one registered")


async def test_zk_maintenance_during_the_move_withdraws_the_old_node_at_once(
    zk: ZooKeeperServer, kz: KazooClient, http_backend_factory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="nerve")
    old, new = http_backend_factory(), http_backend_factory()
    new.set_healthy(False)
    path = lib.unique_path()
    config = zk_web(zk, path, old.port)
    async with lib.running_nerve(config) as daemon:
        await until(lambda: zk_ports(kz, path) == [old.port], what="registered")
        await moving(daemon, caplog, moved_to(config, new.port))
        daemon.services["web"].enter_maintenance("test")
        await until(lambda: zk_ports(kz, path) == [], timeout=2 * INTERVAL + 1, what="withdrawn")
        assert outcome(caplog) == "maintenance"


@pytest.mark.parametrize("back", [True, False], ids=["moved_back", "moved_on"])
async def test_zk_a_second_sighup_during_the_move_keeps_the_old_node(
    zk: ZooKeeperServer,
    kz: KazooClient,
    http_backend_factory,
    caplog: pytest.LogCaptureFixture,
    back: bool,
) -> None:
    """The move's new service, not risen yet, is replaced by a second SIGHUP (the port set
    back, or moved on to a third): the old node waits for the latest one's."""
    caplog.set_level(logging.INFO, logger="nerve")
    old, new, third = (http_backend_factory() for _ in range(3))
    new.set_healthy(False)  # the second SIGHUP comes before it rises
    path = lib.unique_path()
    config = zk_web(zk, path, old.port)
    last = old if back else third
    async with lib.running_nerve(config) as daemon:
        await until(lambda: zk_ports(kz, path) == [old.port], what="registered")
        with children_seen(kz, path) as seen:
            await daemon.reload(moved_to(config, new.port))
            await asyncio.sleep(INTERVAL)  # (its new checks not passed yet)
            await daemon.reload(moved_to(config, last.port))
            await until(lambda: zk_ports(kz, path) == [last.port], what="the last one alone")
            await until(lambda: not daemon._retiring, what="the move ended")
            await asyncio.sleep(RISE * INTERVAL)
            assert zk_ports(kz, path) == [last.port]
        assert seen and all(seen), f"registered nowhere on the way: {seen}"
        assert daemon.services["web"].reporter.registered


@asynccontextmanager
async def etcd_counts(cluster: EtcdCluster, path: str) -> AsyncIterator[list[int]]:
    """How many keys the service's prefix holds, sampled every 20 ms (a gap lasts ~1 s)."""
    counts: list[int] = []
    prefix = etcd_prefix(path).encode()
    async with aetcd.Client(host=cluster.host, port=cluster.port, timeout=2) as client:

        async def sample() -> None:
            while True:
                counts.append((await client.get_prefix(prefix)).count)
                await asyncio.sleep(0.02)

        task = asyncio.get_running_loop().create_task(sample())
        try:
            yield counts
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def test_etcd_a_moved_address_keeps_the_old_key_until_the_new_one_is_put(
    etcd: EtcdCluster, http_backend_factory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="nerve")
    old, new = http_backend_factory(), http_backend_factory()
    path = lib.unique_path()
    service = lib.etcd_service(
        etcd.endpoints, path, old.port, check_interval=INTERVAL, checks=[CHECK]
    )
    config = lib.nerve_config({"web": service})
    async with lib.running_nerve(config) as daemon:
        web = daemon.services["web"]
        await until(lambda: web.reporter.registered and web.reporter.in_sync, what="registered")
        async with etcd_counts(etcd, path) as counts:
            await until(lambda: counts and counts[-1] == 1, what="sampling")
            await daemon.reload(moved_to(config, new.port))
            moved = daemon.services["web"]
            await until(lambda: moved.reporter.registered and not daemon._retiring,
                        what="the new key put, the old one retired")  # fmt: skip
            await until(lambda: counts[-1] == 1, what="the new key alone")
        assert 0 not in counts, f"registered nowhere on the way: {counts}"
        assert outcome(caplog) == "written"
