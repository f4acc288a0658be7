"""A SIGHUP's effect on /metrics: a removed service leaves no series once it is withdrawn
(the withdrawal itself writes some), and a service that stays keeps no series of the checks
it no longer has, whichever way the reload applies. In process, against real ZooKeeper.
(Review: 150 services replaced by SIGHUP, 32 -> 891 series, 40 `nerve_check_up 1.0` of
checks that no longer existed.)"""

from __future__ import annotations

import json
from typing import Any

import pytest
from kazoo.client import KazooClient
from nerve_testlib import nerve_config, running_nerve, unique_path, until, zk_service

from nerve.config import NerveConfig
from nerve.daemon import NerveDaemon
from testbed.process import free_port
from testbed.zookeeper import ZooKeeperServer

NOOP = {"type": "noop"}  # passes: the checks' names are what matters here


def series(daemon: NerveDaemon, **labels: str) -> list[tuple[str, dict[str, str]]]:
    """The samples /metrics shows whose labels include ``labels``."""
    return [
        (sample.name, sample.labels)
        for family in daemon.metrics.registry.collect()
        for sample in family.samples
        if labels.items() <= sample.labels.items()
    ]


def config_of(services: dict[str, dict[str, Any]]) -> NerveConfig:
    return NerveConfig.model_validate(nerve_config(json.loads(json.dumps(services))))


async def settled(daemon: NerveDaemon, service: str, check: str) -> None:
    await until(lambda: not daemon._retiring, what="the old registrations retired")
    await until(lambda: series(daemon, service=service, check=check), what=f"{check} run")


async def test_a_removed_service_leaves_no_series(zk: ZooKeeperServer, kz: KazooClient) -> None:
    web = zk_service(zk.hosts, unique_path(), free_port(), checks=[NOOP])
    api = zk_service(zk.hosts, unique_path(), free_port(), checks=[NOOP])
    async with running_nerve(nerve_config({"web": web, "api": api})) as daemon:
        await until(lambda: daemon.services["api"].reporter.registered, what="api registered")
        await until(lambda: series(daemon, service="api", to="registered"), what="api counted")
        assert (await daemon.reload(config_of({"web": web})))["removed"] == ["api"]
        await until(lambda: not daemon._retiring, what="api withdrawn")
        assert series(daemon, service="api") == []  # before: 22 series, check_up 1.0 among them
        assert series(daemon, service="web", to="registered") != []


# (the service's changes, its check's) -> which way nerve/reload_steps.py applies it
KEPT = [
    pytest.param({}, {"name": "renamed"}, "checks_changed", id="checks-continue"),
    pytest.param({"port": "new"}, {}, "re_registered", id="moved-withdrawn-first"),
    pytest.param({"zk_session_timeout": 3.0}, {"name": "renamed"}, "re_registered",
                 id="registry-hand-over"),
]  # fmt: skip


@pytest.mark.parametrize("service, check, outcome", KEPT)
async def test_a_kept_service_forgets_the_checks_it_no_longer_has(
    zk: ZooKeeperServer,
    kz: KazooClient,
    service: dict[str, Any],
    check: dict[str, Any],
    outcome: str,
) -> None:
    port = free_port()
    web = zk_service(zk.hosts, unique_path(), port, checks=[NOOP])
    async with running_nerve(nerve_config({"web": web})) as daemon:
        old_check = f"noop-127.0.0.1:{port}"
        await until(lambda: daemon.services["web"].reporter.registered, what="registered")
        await until(lambda: series(daemon, check=old_check), what="the check counted")
        edited = {**web, **service, "checks": [{**NOOP, **check}]}
        if "port" in service:
            edited["port"] = free_port()
        new_check = check.get("name", f"noop-127.0.0.1:{edited['port']}")
        assert (await daemon.reload(config_of({"web": edited})))[outcome] == ["web"]
        await settled(daemon, "web", new_check)
        assert series(daemon, check=old_check) == []  # before: every one of its series
        assert series(daemon, service="web", to="registered") != []  # the service's stay
