"""A typo pushed to nerve's config, rejected at SIGHUP, must not become an outage at the next
restart (a package upgrade, a reboot): nerve starts from its last good copy, says so, and a
SIGHUP with the fixed file loads it. Review s38: before, the restart exited 2 and the
service's registration was gone (3 nerves: 14.3 of 15 s registered nowhere, 1,477 of 1,759
requests through synapse failed). Real nerve processes, a real ZooKeeper."""

from __future__ import annotations

import copy
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import nerve_testlib as lib
from kazoo.client import KazooClient
from nerve_testlib import TIMEOUT, NerveProcess, write_config

from testbed.process import free_port, wait_until
from testbed.zookeeper import ZooKeeperServer


def test_a_restart_with_an_invalid_file_runs_the_last_good_config(
    zk: ZooKeeperServer,
    kz: KazooClient,
    http_backend_factory: Callable,
    nerve_process: Callable[[Path], NerveProcess],
    tmp_path: Path,
) -> None:
    backend = http_backend_factory("web")
    zk_path, port = lib.unique_path(), free_port()
    good = lib.nerve_config({"web": lib.zk_service(zk.hosts, zk_path, backend.port)},
                        admin={"port": port}, state_dir=str(tmp_path / "state"))  # fmt: skip
    path = write_config(tmp_path / "nerve.json", good)
    first = nerve_process(path)
    wait_until(lambda: len(lib.children(kz, zk_path)) == 1, TIMEOUT, what="registered")
    typo = copy.deepcopy(good)
    typo["services"]["web"]["chekcs"] = typo["services"]["web"].pop("checks")
    write_config(path, typo)  # config management pushes a typo...
    first.signal(signal.SIGHUP)
    first.wait_for_log("event=config_rejected")  # ... rejected: the running config stays
    first.signal(signal.SIGTERM)
    assert first.wait(TIMEOUT) == 0

    second = nerve_process(path)  # the upgrade's restart, the typo in place
    wait_until(lambda: len(lib.children(kz, zk_path)) == 1 or not second.process.alive, TIMEOUT,
               what=f"registered again\n{second.log()}")  # fmt: skip
    assert second.process.alive, second.log()  # (before: exit 2, registration gone)
    assert "event=config_last_good_used" in second.log() and "chekcs" in second.log()
    wait_until(lambda: lib.admin_ready(port), TIMEOUT, what="nerve's admin API")
    status = lib.admin_get(port, "/status")["config_last_good"]
    assert "chekcs" in status["errors"][0] and status["copy"].startswith(str(tmp_path))
    assert lib.admin_get(port, "/health")["config_last_good"]["since"] == status["since"]
    assert "nerve_config_last_good 1.0" in lib.admin_get(port, "/metrics")

    write_config(path, good)  # fixed: the next SIGHUP loads it normally
    second.signal(signal.SIGHUP)
    second.wait_for_log("event=config_last_good_left")
    assert lib.admin_get(port, "/status")["config_last_good"] is None
    assert "nerve_config_last_good 0.0" in lib.admin_get(port, "/metrics")
    assert len(lib.children(kz, zk_path)) == 1

    write_config(path, typo)  # -k and --no-last-good never take the copy
    for flag in ("--check-config", "--no-last-good"):
        done = subprocess.run([str(lib.NERVE_BIN), "-c", str(path), flag], capture_output=True,
                              text=True, timeout=TIMEOUT)  # fmt: skip
        assert done.returncode == 2 and "chekcs" in done.stderr, (flag, done.stderr)


def test_a_first_start_with_an_invalid_file_exits_2_as_before(
    nerve_process: Callable[[Path], NerveProcess], tmp_path: Path
) -> None:
    path = write_config(tmp_path / "nerve.json", lib.nerve_config({"web": {"port": "x"}}))
    assert nerve_process(path).wait(TIMEOUT) == 2  # no copy yet
