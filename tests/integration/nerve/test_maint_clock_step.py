"""`nerve maint --for` across a restart with the wall clock stepped while nerve was down:
a real nerve (under the wall-clock shim of tests/helpers/wallshift.py: only CLOCK_REALTIME
moves, as with an NTP step), ZooKeeper and the `nerve maint` command. Within the same boot
the flag's end is counted on the boot's clock: a step ahead does not end it early, a step
back does not stretch it."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kazoo.client import KazooClient
from nerve_testlib import (
    NERVE_BIN,
    NerveProcess,
    admin_get,
    admin_ready,
    children,
    nerve_config,
    unique_path,
)
from nerve_testlib import zk_service as service
from wallshift import WallShift

from testbed.httpbackend import HttpBackend
from testbed.process import free_port, wait_until
from testbed.zookeeper import ZooKeeperServer


def web_status(admin: int) -> dict:
    return admin_get(admin, "/status")["services"]["web"]


@pytest.fixture
def app() -> Iterator[HttpBackend]:
    backend = HttpBackend("web").start()
    yield backend
    backend.stop()


def test_a_restart_after_a_clock_step_keeps_the_maintenance_to_its_end(
    zk: ZooKeeperServer, kz: KazooClient, app: HttpBackend, tmp_path: Path
) -> None:
    shift, path, admin = WallShift(tmp_path), unique_path(), free_port()
    (tmp_path / "state").mkdir()
    config = nerve_config({"web": service(zk.hosts, path, app.port)}, admin={"port": admin},
                          state_dir=str(tmp_path / "state"))  # fmt: skip
    config_path = tmp_path / "nerve.json"
    config_path.write_text(json.dumps(config))
    flag_file = tmp_path / "state" / "web.json"
    started: list[NerveProcess] = []

    def start() -> NerveProcess:
        nerve = NerveProcess(config_path, tmp_path, name=f"nerve{len(started)}")
        assert nerve.process.env is not None
        nerve.process.env.update(shift.env())
        started.append(nerve.start())
        wait_until(lambda: admin_ready(admin), 30, what="nerve's admin API")
        return nerve

    def restarted_after(step: float) -> NerveProcess:
        """`maint --for 1h`, nerve stopped, the clock stepped by ``step``, nerve started."""
        done = subprocess.run([str(NERVE_BIN), "maint", "web", "--reason", "repair", "--for",
                               "1h", "--admin", f"http://127.0.0.1:{admin}"],
                              capture_output=True, text=True, timeout=30, check=False)  # fmt: skip
        assert done.returncode == 0, done.stderr
        wait_until(lambda: not children(kz, path), 10, what="withdrawn")
        started[-1].signal(signal.SIGTERM)
        assert started[-1].wait(20) == 0
        shift.set(step)
        return start()

    try:
        start()
        wait_until(lambda: children(kz, path), 20, what="registered")
        restarted_after(3660)  # +61 min: past the flag's wall-clock end
        wait_until(lambda: web_status(admin).get("healthy"), 20, what="web's check passing")
        time.sleep(3)  # (an expired flag registers it at the next round)
        assert children(kz, path) == [], "the 1 h maintenance ended 59 min early"
        assert web_status(admin)["reason"] == "maintenance: admin: repair"
        assert flag_file.exists()
    finally:
        shift.set(0)
        for nerve in started:
            nerve.process.kill()
