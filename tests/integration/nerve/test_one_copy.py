"""One nerve per config (smartstack.instance_lock): real nerve processes, real ZooKeeper.

A second nerve on the same config deleted the first one's node as a leftover; the first
stood aside, and once the second stopped the registration was gone for good while the first
said "registered" (review s26 "two copies overlap"). Now the second waits for the first
one's lock in ``<state_dir>/nerve-<config stem>-<digest>.lock`` and exits 1 with a message when the
first does not exit; when it does meanwhile (a restart overlap), the second starts and
registers. Review s27: two configs in one directory (one default state_dir) both run, so do
two configs of one file name in two directories with one state_dir (web/nerve.json and
api/nerve.json: before, api exited 1 naming its own config as the one running); a lock
file this user may not write (another user's) still keeps a second copy out; a SIGINT
during the wait ends it at once, quietly.
"""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from kazoo.client import KazooClient
from nerve_testlib import (
    NERVE_BIN,
    children,
    nerve_config,
    unique_path,
    until,
    write_config,
    zk_service,
)

from smartstack.instance_lock import WAIT_ENV
from testbed.process import ManagedProcess, free_port
from testbed.zookeeper import ZooKeeperServer


def second_copy(config: Path, workdir: Path, wait_s: float, name: str = "nerve-b",
                prefix: Sequence[str] = ()) -> ManagedProcess:  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1", WAIT_ENV: str(wait_s)}
    return ManagedProcess([*prefix, NERVE_BIN, "-c", config], workdir, name, env).start()


async def waiting_copy(config: Path, workdir: Path, prefix: Sequence[str] = ()) -> ManagedProcess:
    """A second copy (a 60 s wait) once it says it waits for the lock (or has exited)."""
    other = second_copy(config, workdir, 60, prefix=prefix)
    try:
        await until(lambda: "instance_lock_waiting" in other.log_path.read_text()
                    or not other.alive, timeout=30, what="the second nerve waiting")  # fmt: skip
    except BaseException:
        other.kill()
        raise
    return other


def first_registered(zk: ZooKeeperServer, tmp_path: Path, nerve_process) -> tuple[Path, str, Any]:
    """The first nerve (one always-healthy service, its own state_dir), registered."""
    path = unique_path()
    config = nerve_config({"web": zk_service(zk.hosts, path, free_port(), checks=[])},
                          state_dir=str(tmp_path / "state"))  # fmt: skip
    config_path = write_config(tmp_path / "nerve.json", config)
    first = nerve_process(config_path)
    first.wait_for_log("znode_created")
    return config_path, path, first


async def first_exits(first: Any, other: ManagedProcess) -> None:
    """SIGTERM to the first nerve: the waiting one registers."""
    first.signal(signal.SIGTERM)
    assert first.wait(20) == 0
    await until(lambda: "znode_created" in other.log_path.read_text(), timeout=40,
                what="the second nerve registering")  # fmt: skip


async def first_stops_second_registers(first: Any, other: ManagedProcess, kz: KazooClient,
                                       path: str) -> None:  # fmt: skip
    """The first copy stopped (SIGTERM): the waiting one takes the lock and registers."""
    await first_exits(first, other)
    assert "instance_lock_taken" in other.log_path.read_text()
    await until(lambda: len(children(kz, path)) == 1, what="its node")


def refused_copy(config: Path, workdir: Path, wait_s: float) -> str:
    """A second copy that must exit 1 (the lock held past its ``wait_s``): its log."""
    other = second_copy(config, workdir, wait_s)
    try:
        assert other.wait(60) == 1, other.log_tail()
    finally:
        other.kill()
    return other.log_path.read_text()


@asynccontextmanager
async def both_register(
    kz: KazooClient, paths: Mapping[str, str], configs: tuple[Path, Path], workdir: Path,
    nerve_process: Any,
) -> AsyncIterator[ManagedProcess]:  # fmt: skip
    """The first config's nerve, then the second's: each registers its own, no lock wait."""
    first = nerve_process(configs[0])
    first.wait_for_log("znode_created")
    other = second_copy(configs[1], workdir, 3)
    try:
        await until(lambda: "znode_created" in other.log_path.read_text() or not other.alive,
                    timeout=30, what="the second registering")  # fmt: skip
        assert other.alive, other.log_tail()
        assert [len(children(kz, path)) for path in paths.values()] == [1, 1]
        assert "instance_lock" not in other.log_path.read_text()  # no wait, no warning
        yield other
    finally:
        other.stop(timeout=20)


async def test_second_nerve_on_one_config_exits_1_and_leaves_the_node_alone(
    zk: ZooKeeperServer, kz: KazooClient, tmp_path: Path, nerve_process
) -> None:
    config, path, first = first_registered(zk, tmp_path, nerve_process)
    [lock] = (tmp_path / "state").glob("nerve-nerve-*.lock")
    assert lock.read_text().splitlines() == [str(first.pid), str(config)]
    nodes = children(kz, path)
    assert len(nodes) == 1
    log = refused_copy(config, tmp_path, 3)
    assert "instance_lock_waiting" in log
    assert f"nerve pid {first.pid} already runs with {config}" in log
    assert "znode" not in log  # it never touched the registry
    assert children(kz, path) == nodes and first.process.alive


async def test_second_nerve_starts_once_the_first_exits_during_its_wait(
    zk: ZooKeeperServer, kz: KazooClient, tmp_path: Path, nerve_process
) -> None:
    config, path, first = first_registered(zk, tmp_path, nerve_process)
    other = await waiting_copy(config, tmp_path)
    try:
        assert other.alive and len(children(kz, path)) == 1
        await first_stops_second_registers(first, other, kz, path)
        assert other.alive
    finally:
        other.stop(timeout=20)


async def test_two_configs_in_one_directory_both_register(
    zk: ZooKeeperServer, kz: KazooClient, tmp_path: Path, nerve_process
) -> None:
    # no state_dir: both share the default nerve-state beside them (before: one nerve.lock
    # there, and b exited 1 after 15 s, again and again under Restart=always)
    paths = {name: unique_path() for name in ("a", "b")}
    for name, path in paths.items():
        service = zk_service(zk.hosts, path, free_port(), checks=[])
        write_config(tmp_path / f"{name}.json", nerve_config({f"web_{name}": service}))
    configs = (tmp_path / "a.json", tmp_path / "b.json")
    async with both_register(kz, paths, configs, tmp_path, nerve_process):
        kept = sorted(p.name for p in (tmp_path / "nerve-state").iterdir())
        locks = [name[:8] for name in kept if name.endswith(".lock")]
        copies = [name[:12] for name in kept if name.endswith(".yaml")]
        assert locks == ["nerve-a-", "nerve-b-"], kept
        assert copies == ["last-good-a-", "last-good-b-"], kept  # (one last good copy each)


async def test_two_configs_of_one_name_sharing_a_state_dir_both_register(
    zk: ZooKeeperServer, kz: KazooClient, tmp_path: Path, nerve_process
) -> None:
    # web/nerve.json and api/nerve.json, one absolute state_dir (examples/systemd/nerve.yaml):
    # before, both locked <state_dir>/nerve.json.lock and api exited 1 after its wait, saying
    # "nerve pid <web's> already runs with .../api/nerve.json"
    paths = {app: unique_path() for app in ("web", "api")}
    for app, path in paths.items():
        (tmp_path / app).mkdir()
        service = zk_service(zk.hosts, path, free_port(), checks=[])
        config = nerve_config({app: service}, instance_id=f"i-{app}",
                              state_dir=str(tmp_path / "state"))  # fmt: skip
        write_config(tmp_path / app / "nerve.json", config)
    configs = (tmp_path / "web" / "nerve.json", tmp_path / "api" / "nerve.json")
    async with both_register(kz, paths, configs, tmp_path, nerve_process):
        assert len(list((tmp_path / "state").glob("nerve-nerve-*.lock"))) == 2


async def test_a_copy_by_a_link_is_told_the_running_copys_config(
    zk: ZooKeeperServer, kz: KazooClient, tmp_path: Path, nerve_process
) -> None:
    # before: "nerve pid N already runs with <the link>", the waiting copy's own path
    config, path, first = first_registered(zk, tmp_path, nerve_process)
    (tmp_path / "etc").mkdir()
    link = tmp_path / "etc" / "web.json"
    link.symlink_to(config)
    log = refused_copy(link, tmp_path, 1)
    assert f"nerve pid {first.pid} already runs with {config} (lock" in log
    assert len(children(kz, path)) == 1 and first.process.alive


async def test_a_config_link_flipped_between_two_starts_keeps_the_second_out(
    zk: ZooKeeperServer, kz: KazooClient, tmp_path: Path, nerve_process
) -> None:
    # nerve.json -> releases/nerve-v1.json, flipped to v2 before a second start (default
    # state_dir, beside nerve.json). Before: one lock per real path, so the second ran and
    # registered, the first logged registration_taken_over, and once the second stopped the
    # service was registered nowhere.
    path = unique_path()
    text = nerve_config({"web": zk_service(zk.hosts, path, free_port(), checks=[])})
    (tmp_path / "releases").mkdir()
    link = tmp_path / "nerve.json"
    for version in ("v1", "v2"):
        write_config(tmp_path / "releases" / f"nerve-{version}.json", text)
    link.symlink_to("releases/nerve-v1.json")
    first = nerve_process(link)
    first.wait_for_log("znode_created")
    (tmp_path / "next.json").symlink_to("releases/nerve-v2.json")
    (tmp_path / "next.json").rename(link)
    assert "znode" not in refused_copy(link, tmp_path, 2)
    assert len(children(kz, path)) == 1 and first.process.alive


def _without_write_access() -> list[str]:
    """A prefix that runs nerve unable to write a file whose mode says read-only, as a
    service user is with root's lock file: as root, without CAP_DAC_OVERRIDE."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("root without setpriv: cannot drop CAP_DAC_OVERRIDE")
    return ["setpriv", "--bounding-set=-dac_override"]


async def test_a_lock_file_this_user_may_not_write_still_keeps_a_second_copy_out(
    zk: ZooKeeperServer, kz: KazooClient, tmp_path: Path, nerve_process
) -> None:
    # before: EACCES opening it read-write -> instance_lock_unavailable, and the second copy
    # ran beside the first (a root debug run's file, the unit's service user)
    config, path, first = first_registered(zk, tmp_path, nerve_process)
    [lock] = (tmp_path / "state").glob("*.lock")
    lock.chmod(0o444)
    prefix = _without_write_access()
    other = await waiting_copy(config, tmp_path, prefix)
    third = None
    try:
        assert other.alive and len(children(kz, path)) == 1, other.log_tail()
        await first_exits(first, other)
        assert "instance_lock_unavailable" not in other.log_path.read_text()
        # it holds the lock read-only (the pid in the file is the first one's, gone): a
        # third copy is kept out all the same
        third = second_copy(config, tmp_path, 1, name="nerve-c", prefix=prefix)
        assert third.wait(30) == 1, third.log_tail()
        assert "nerve pid ? already runs" in third.log_path.read_text()
        assert other.alive and len(children(kz, path)) == 1
    finally:
        other.stop(timeout=20)
        if third is not None:
            third.kill()


async def test_a_sigint_ends_the_wait_at_once_without_a_traceback(
    zk: ZooKeeperServer, tmp_path: Path, nerve_process
) -> None:
    config, _, first = first_registered(zk, tmp_path, nerve_process)
    other = await waiting_copy(config, tmp_path)
    try:
        assert other.alive, other.log_tail()
        os.kill(other.pid, signal.SIGINT)
        assert other.wait(20) == 130  # well inside its 60 s wait (before: -2 and a traceback)
        log = other.log_path.read_text()
        assert "instance_lock_wait_interrupted" in log and "Traceback" not in log
        assert first.process.alive
    finally:
        other.kill()
