"""The state file across a restart with the registry down and the wall clock stepped.

Real synapse processes under a wall-clock shim (tests/helpers/wallshift.py: only
CLOCK_REALTIME moves, as with an NTP step), a managed HAProxy and ZooKeeper, on loopback.
Synapse 1 serves a and b and stops; ZooKeeper stops; its HAProxy is killed (a reboot's
effect on the data plane); synapse 2 starts with its clock two TTLs ahead. Within the same
boot the file's age is taken on boottime (10 s: served). A file from an earlier boot is
judged on the wall clock (too old: nothing served, a wrong answer being worse than a 503),
and served once the clock is corrected, without the registry.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from kazoo.client import KazooClient
from synapse_e2e import Synapse, nerve_record, spread, wait, wait_serving
from wallshift import WallShift

from testbed.httpbackend import HttpBackend
from testbed.process import free_port
from testbed.zookeeper import ZooKeeperServer

PATH = "/clock-steps/web"
TTL = 3600


@pytest.fixture
def own_zk(tmp_path: Path) -> Iterator[ZooKeeperServer]:
    server = ZooKeeperServer(workdir=tmp_path / "zk").start()
    yield server
    server.stop()


@pytest.fixture
def backends() -> Iterator[list[HttpBackend]]:
    started = [HttpBackend(name).start() for name in "ab"]
    yield started
    for backend in started:
        backend.stop()


def stopped_after_serving(
    zk: ZooKeeperServer, backends: list[HttpBackend], shift: WallShift, port: int
) -> Synapse:
    """Synapse 1 served ``backends`` and stopped; ZooKeeper and the HAProxy are gone."""
    writer = KazooClient(hosts=zk.hosts)
    writer.start(timeout=30)
    for b in backends:
        writer.create(f"{PATH}/{b.name}_", nerve_record(b), sequence=True, makepath=True)
    writer.stop()
    syn = Synapse({"web": {"discovery": {"method": "zookeeper", "hosts": [zk.hosts], "path": PATH},
                           "haproxy": {"port": port, "bind_address": "127.0.0.1"}}})  # fmt: skip
    syn.config["haproxy"]["managed"]["stop_on_exit"] = False
    syn.config["haproxy"]["state_file_ttl"] = TTL
    syn.write_config()
    assert syn.process.env is not None
    syn.process.env.update(shift.env())
    syn.start()
    wait_serving(port, {b.name for b in backends})
    pids = syn.haproxy_pids()
    syn.signal(signal.SIGTERM)
    assert syn.process.wait(15) == 0
    zk.stop()
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    return syn


def test_a_restart_in_the_same_boot_serves_the_file_whatever_the_wall_clock_did(
    own_zk: ZooKeeperServer, backends: list[HttpBackend], tmp_path: Path
) -> None:
    shift, port = WallShift(tmp_path), free_port()
    syn = stopped_after_serving(own_zk, backends, shift, port)
    shift.set(2 * TTL)  # stepped ahead while synapse was down: the file looks 2 h old
    try:
        syn.start()
        wait_serving(port, {"a", "b"}, timeout=10)
        assert syn.status()["services"]["web"]["origin"] == "state_file"
        assert "state_file_clock_stepped" in syn.process.log_path.read_text()
    finally:
        syn.cleanup()


def test_after_a_reboot_a_corrected_clock_brings_the_file_back(
    own_zk: ZooKeeperServer, backends: list[HttpBackend], tmp_path: Path
) -> None:
    shift, port = WallShift(tmp_path), free_port()
    syn = stopped_after_serving(own_zk, backends, shift, port)
    state = syn.dir / "haproxy.synapse-state.json"
    doc = json.loads(state.read_text())
    clock = doc.get("_synapse", {}).get("clock")
    if clock is not None:  # (an older synapse's file has none: the wall clock's rule)
        clock["boot_id"] = "an-earlier-boot"  # the file was written before a reboot
    state.write_text(json.dumps(doc))
    shift.set(2 * TTL)  # an RTC 2 h ahead at boot, NTP not synced yet
    try:
        syn.start()
        assert set(spread(port, 10)) == {"http-503"}, "entries past the TTL are not served"
        assert syn.status()["services"]["web"]["origin"] == "none"
        shift.set(0)  # NTP syncs; ZooKeeper is still down
        wait_serving(port, {"a", "b"}, timeout=15)
        wait(lambda: syn.status()["services"]["web"]["origin"] == "state_file", 5, "origin")
        assert "wall_clock_stepped" in syn.process.log_path.read_text()
    finally:
        syn.cleanup()
