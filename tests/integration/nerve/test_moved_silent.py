"""A SIGHUP that gives a healthy, registered service a wrong port never registers the new
address (a moved address starts unregistered) and, before, never said why: info lines only
(`config_reloaded re_registered`, `znode_deleted`). Now `service_not_registering` warns
with the check's error once it failed `fall` times, and /status shows it. The old
registration stays meanwhile, as long as its own checks pass at the old port (make before
break: nerve/handover.py). A real nerve process, real ZooKeeper, a real HTTP backend."""

from __future__ import annotations

import signal
from pathlib import Path

from kazoo.client import KazooClient
from nerve_testlib import (
    admin_get,
    children,
    nerve_config,
    unique_path,
    until,
    write_config,
    zk_service,
)

from testbed.process import free_port
from testbed.zookeeper import ZooKeeperServer


async def test_a_sighup_to_a_wrong_port_warns_why_the_service_is_out(
    zk: ZooKeeperServer, kz: KazooClient, http_backend_factory, tmp_path: Path, nerve_process
) -> None:
    backend = http_backend_factory()
    path, admin, wrong = unique_path(), free_port(), free_port()
    check = {"type": "http", "uri": "/health", "timeout": 1.0, "rise": 1, "fall": 3}
    config = nerve_config(
        {"web": zk_service(zk.hosts, path, backend.port, checks=[check])}, admin={"port": admin}
    )
    cfg = write_config(tmp_path / "nerve.json", config)
    nerve = nerve_process(cfg)
    await until(lambda: children(kz, path), what="registration")

    config["services"]["web"]["port"] = wrong
    write_config(cfg, config)
    offset = len(nerve.log())
    nerve.signal(signal.SIGHUP)
    await until(lambda: "service_not_registering" in nerve.log()[offset:], what="the warning")
    assert len(children(kz, path)) == 1  # the old port's, still vouched for by its checks
    [line] = [x for x in nerve.log()[offset:].splitlines() if "service_not_registering" in x]
    assert "level=warning" in line and "service=web" in line and "failures=3" in line
    assert f"127.0.0.1:{wrong}" in line  # the check's error names the address it tried
    status = admin_get(admin, "/status")["services"]["web"]
    assert status["registered"] is True  # (the old registration: consumers still use it)
    assert status["not_registering"]["failures"] == 3
    assert f"127.0.0.1:{wrong}" in status["not_registering"]["error"]
