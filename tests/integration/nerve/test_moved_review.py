"""Review s37 (cr-moved): a move's old registration must not outlive the service."""

from __future__ import annotations

import asyncio
import json
import logging

import nerve_testlib as lib
import pytest
from kazoo.client import KazooClient
from nerve_testlib import children, until

from nerve.config import NerveConfig
from nerve.control import describe
from smartstack.logs import _FIELDS
from testbed.zookeeper import ZooKeeperServer

RISE, FALL, INTERVAL = 3, 2, 0.3
CHECK = {"type": "http", "uri": "/health", "timeout": 1, "rise": RISE, "fall": FALL}


def zk_ports(kz: KazooClient, path: str) -> list[int]:
    return sorted(json.loads(kz.get(f"{path}/{c}")[0])["port"] for c in children(kz, path))


def outcome(caplog: pytest.LogCaptureFixture) -> str | None:
    done = [r for r in caplog.records if r.getMessage() == "address_move_done"]
    return str(getattr(done[-1], _FIELDS)["outcome"]) if done else None


async def test_zk_a_service_removed_during_its_move_is_withdrawn(
    zk: ZooKeeperServer, kz: KazooClient, http_backend_factory, caplog: pytest.LogCaptureFixture
) -> None:
    """The new address not risen yet, a second SIGHUP removes the service: the old
    registration goes too (the old service's checks still pass). Before: left for good."""
    caplog.set_level(logging.INFO, logger="nerve")
    old, new = http_backend_factory(), http_backend_factory()
    new.set_healthy(False)  # the app not up at its new port yet
    path = lib.unique_path()
    web = lib.zk_service(zk.hosts, path, old.port, check_interval=INTERVAL, checks=[CHECK])
    other = lib.zk_service(zk.hosts, lib.unique_path(), old.port, check_interval=INTERVAL)
    config = lib.nerve_config({"web": web, "other": other})
    async with lib.running_nerve(config) as daemon:
        await until(lambda: zk_ports(kz, path) == [old.port], what="registered")
        moved = json.loads(json.dumps(config))
        moved["services"]["web"]["port"] = new.port
        await daemon.reload(NerveConfig.model_validate(moved))
        await asyncio.sleep(INTERVAL)
        removed = json.loads(json.dumps(config))
        del removed["services"]["web"]
        await daemon.reload(NerveConfig.model_validate(removed))
        await until(lambda: zk_ports(kz, path) == [], timeout=3,
                    what="the old registration withdrawn with the service")  # fmt: skip
        await until(lambda: not daemon._retiring, timeout=3, what="nothing left retiring")
        assert outcome(caplog) == "withdrawn"


async def test_zk_the_gauges_say_the_old_service_until_the_move_is_done(
    zk: ZooKeeperServer, kz: KazooClient, http_backend_factory, caplog: pytest.LogCaptureFixture
) -> None:
    """During a move the old service (checks passing, registered) and the new one (rising)
    run under one name: nerve_service_healthy flipped 1/0 each round, and the old
    reporter's withdrawal, after the new one's write, left nerve_service_registered at 0
    for a registered service (until its next write). Now: healthy stays 1 (the old one's
    state) until the move is done, registered says 1 after it."""
    caplog.set_level(logging.INFO, logger="nerve")
    old, new = http_backend_factory(), http_backend_factory()
    path = lib.unique_path()
    web = lib.zk_service(zk.hosts, path, old.port, check_interval=INTERVAL, checks=[CHECK])
    config = lib.nerve_config({"web": web})
    async with lib.running_nerve(config) as daemon:
        await until(lambda: zk_ports(kz, path) == [old.port], what="registered")
        healthy = daemon.metrics.healthy.labels("web")
        registered = daemon.metrics.registered.labels("web")
        seen: list[tuple[float, float]] = []
        moved = json.loads(json.dumps(config))
        moved["services"]["web"]["port"] = new.port
        await daemon.reload(NerveConfig.model_validate(moved))
        for _ in range(200):  # (bounded: ~4 s; the move takes RISE x INTERVAL ~ 0.9 s)
            seen.append((healthy._value.get(), registered._value.get()))
            if outcome(caplog) == "written" and not daemon._retiring:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)
        assert outcome(caplog) == "written"
        assert zk_ports(kz, path) == [new.port]
        assert [h for h, _ in seen] == [1.0] * len(seen), f"healthy flipped: {seen}"
        assert (healthy._value.get(), registered._value.get()) == (1.0, 1.0)


async def test_zk_a_move_is_said_in_status_and_the_admin_api_does_not_wait_for_it(
    zk: ZooKeeperServer, kz: KazooClient, http_backend_factory, caplog: pytest.LogCaptureFixture
) -> None:
    """During a move /status said `registered: true` and nothing else (the old node), `nerve
    status` "registered (registry write pending)", and the admin API's answer (`nerve up`,
    `nerve maint` ... off) waited its 2 s for the kept old registration to go. Now /status
    says `moving_from`, and the answer comes once the registry holds what is wanted."""
    caplog.set_level(logging.INFO, logger="nerve")
    old, new = http_backend_factory(), http_backend_factory()
    new.set_healthy(False)  # the app not up at its new port yet: the move lasts
    path = lib.unique_path()
    web = lib.zk_service(zk.hosts, path, old.port, check_interval=INTERVAL, checks=[CHECK])
    config = lib.nerve_config({"web": web})
    async with lib.running_nerve(config) as daemon:
        await until(lambda: zk_ports(kz, path) == [old.port], what="registered")
        moved = json.loads(json.dumps(config))
        moved["services"]["web"]["port"] = new.port
        await daemon.reload(NerveConfig.model_validate(moved))
        service = daemon.services["web"]
        await until(lambda: service.predecessor is not None, what="the move started")
        status = service.status()
        assert status["moving_from"] == f"{web['host']}:{old.port}"
        said = describe({**status, "service": "web"})
        assert f"at {web['host']}:{old.port} (address move" in said
        await asyncio.wait_for(service.wait_in_sync(), 0.5)  # (before: until the move's end)
        service.enter_maintenance("test")  # the old registration goes: that is waited for
        await asyncio.wait_for(service.wait_in_sync(), 3)
        assert zk_ports(kz, path) == []
        assert service.status()["moving_from"] is None
        assert outcome(caplog) == "maintenance"
