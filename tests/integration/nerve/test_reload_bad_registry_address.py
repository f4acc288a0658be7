"""A SIGHUP whose zk_hosts kazoo cannot parse is refused and the registration stays (real
nerve process, real ZooKeeper).

Review s21: zk_hosts ["127.0.0.1:PORT,"] (a comma left from a connection string) passed the
loader; nerve logged `service_not_started error="bad hostname"`, then config_reloaded, and
deleted the healthy instance's znode ~20 ms later, for good.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

from kazoo.client import KazooClient
from nerve_testlib import children, nerve_config, unique_path, write_config, zk_service

from testbed.zookeeper import ZooKeeperServer


def test_a_sighup_with_a_bad_zk_host_keeps_the_registration(
    zk: ZooKeeperServer, kz: KazooClient, tmp_path: Path, nerve_process
) -> None:
    path = unique_path()
    config = nerve_config({"web": zk_service(zk.hosts, path, 7001, checks=[])})
    config_path = write_config(tmp_path / "nerve.json", config)
    nerve = nerve_process(config_path)
    deadline = time.monotonic() + 30
    while not children(kz, path) and time.monotonic() < deadline:
        time.sleep(0.1)
    registered = children(kz, path)
    assert len(registered) == 1, nerve.log()[-2000:]

    config = json.loads(json.dumps(config))
    config["services"]["web"]["zk_hosts"] = [f"{zk.hosts},"]
    write_config(config_path, config)
    mark = len(nerve.log())
    nerve.signal(signal.SIGHUP)
    nerve.wait_for_log("event=config_rejected", after=mark)
    time.sleep(2.0)  # (the old code deleted the node ~20 ms after its reload)

    log = nerve.log()[mark:]
    assert f"services.web: zk_hosts[0]: '{zk.hosts},' is not host:port" in log, log
    assert "config_reloaded" not in log, log
    assert children(kz, path) == registered
