"""One nerve per config (smartstack.identity_lock): real nerve processes, real ZooKeeper.

Review s28: the lock file lives in the state_dir, which is taken from the config's path,
so one config by a link in another directory, by a ``current -> release/vN`` flip or in two
files got two lock files and ran twice; so did any copy when an older version had left a
0600 lock file of another user there. Both copies registered the same service, and once the
second stopped it was registered nowhere. Now the set of its registrations is also held
host-wide by one abstract unix socket named after it: the second copy waits and exits 1 as
before, naming the first (reloads, squatters, descriptors: test_one_copy_identity_reload.py).
"""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytest
from kazoo.client import KazooClient
from nerve_testlib import children, nerve_config, unique_path, until, write_config, zk_service
from test_one_copy import first_stops_second_registers, second_copy, waiting_copy

from smartstack.instance_lock import nerve_lock_paths
from testbed.process import free_port
from testbed.zookeeper import ZooKeeperServer

NOBODY = 65534


def _one_config(zk: ZooKeeperServer) -> tuple[str, dict]:
    path = unique_path()
    return path, nerve_config({"web": zk_service(zk.hosts, path, free_port(), checks=[])})


def _other_path(tmp_path: Path, config: Path, how: str) -> Path:
    """The same config met by another path whose default state_dir differs."""
    if how == "link elsewhere":
        (tmp_path / "etc").mkdir()
        (tmp_path / "etc" / "nerve.json").symlink_to(config)
        return tmp_path / "etc" / "nerve.json"
    if how == "copy elsewhere":
        (tmp_path / "copy").mkdir()
        return Path(shutil.copy(config, tmp_path / "copy" / "nerve.json"))
    # "directory flip": current -> release/v1, flipped to release/v2 (the same config)
    (tmp_path / "release" / "v2").mkdir()
    shutil.copy(config.resolve(), tmp_path / "release" / "v2" / "nerve.json")
    (tmp_path / "next").symlink_to("release/v2")
    (tmp_path / "next").rename(tmp_path / "current")
    return config


@pytest.mark.parametrize("how", ["link elsewhere", "copy elsewhere", "directory flip"])
async def test_one_config_by_a_path_with_another_state_dir_keeps_the_second_out(
    zk: ZooKeeperServer, kz: KazooClient, tmp_path: Path, nerve_process, how: str
) -> None:
    # before: the second copy's lock was in its own nerve-state: it ran and registered, the
    # first logged registration_taken_over, and once the second stopped: registered nowhere
    path, text = _one_config(zk)
    if how == "directory flip":
        (tmp_path / "release" / "v1").mkdir(parents=True)
        write_config(tmp_path / "release" / "v1" / "nerve.json", text)
        (tmp_path / "current").symlink_to("release/v1")
        config = tmp_path / "current" / "nerve.json"
    else:
        (tmp_path / "app").mkdir()
        config = write_config(tmp_path / "app" / "nerve.json", text)
    first = nerve_process(config)
    first.wait_for_log("znode_created")
    other = second_copy(_other_path(tmp_path, config, how), tmp_path, 1)
    try:
        assert other.wait(30) == 1, other.log_tail()
    finally:
        other.kill()
    log = other.log_path.read_text()
    assert f"nerve pid {first.pid} already runs with {config} (lock @smartstack-nerve-" in log
    assert "services=web" in log and "znode" not in log
    assert len(children(kz, path)) == 1 and first.process.alive


async def test_the_second_starts_once_the_first_exits_and_a_sigint_ends_its_wait(
    zk: ZooKeeperServer, kz: KazooClient, tmp_path: Path, nerve_process
) -> None:
    path, text = _one_config(zk)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    config = write_config(tmp_path / "a" / "nerve.json", text)
    first = nerve_process(config)
    first.wait_for_log("znode_created")
    copy = Path(shutil.copy(config, tmp_path / "b" / "nerve.json"))
    interrupted = await waiting_copy(copy, tmp_path)
    try:
        os.kill(interrupted.pid, signal.SIGINT)
        assert interrupted.wait(20) == 130
        assert "instance_lock_wait_interrupted" in interrupted.log_path.read_text()
    finally:
        interrupted.kill()
    other = second_copy(copy, tmp_path, 60, name="nerve-c")  # (its own log)
    try:
        await until(lambda: "instance_lock_waiting" in other.log_path.read_text(),
                    timeout=30, what="the next copy waiting")  # fmt: skip
        assert f"holder_pid={first.pid}" in other.log_path.read_text()
        await first_stops_second_registers(first, other, kz, path)
    finally:
        other.stop(timeout=20)


def _as_an_unprivileged_root() -> list[str]:
    """Run nerve unable to open another user's 0600 file, as that user's peer would be."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root (to make another user's file) and setpriv")
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]


async def test_another_users_0600_lock_file_leaves_the_config_guarded(
    zk: ZooKeeperServer, kz: KazooClient, tmp_path: Path
) -> None:
    # an older version run as another user left its lock files 0600: before, both copies
    # logged instance_lock_unavailable and ran side by side
    prefix = _as_an_unprivileged_root()
    path, text = _one_config(zk)
    config = write_config(tmp_path / "nerve.json", text)
    state = tmp_path / "nerve-state"
    state.mkdir()
    for lock in nerve_lock_paths(state, str(config)):
        lock.write_text("")
        os.chown(lock, NOBODY, NOBODY)
        lock.chmod(0o600)
    first = second_copy(config, tmp_path, 1, name="nerve-a", prefix=prefix)
    other = None
    try:
        await until(lambda: "znode_created" in first.log_path.read_text() or not first.alive,
                    timeout=30, what="the first registering")  # fmt: skip
        assert "instance_lock_unavailable" in first.log_path.read_text()
        other = second_copy(config, tmp_path, 1, prefix=prefix)
        assert other.wait(30) == 1, other.log_tail()
        assert f"nerve pid {first.pid} already runs with {config}" in other.log_path.read_text()
        assert len(children(kz, path)) == 1 and first.alive
    finally:
        first.stop(timeout=20)
        if other is not None:
            other.kill()
