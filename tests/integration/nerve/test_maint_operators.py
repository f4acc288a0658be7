"""`nerve maint` / `nerve up` as operators run them, against a real nerve and ZooKeeper:
two operators on one service, a maint during a SIGHUP hand-over to another ensemble,
`-c FILE` with a file the running nerve did not start from as it is, and a maint whose
flag file the disk refuses."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from pathlib import Path

import pytest
from kazoo.client import KazooClient
from nerve_testlib import NERVE_BIN, children, nerve_config, running_nerve, unique_path, until
from nerve_testlib import zk_service as service

from nerve import handover
from nerve.config import NerveConfig
from testbed.process import free_port
from testbed.zookeeper import ZooKeeperServer

DRAIN = 1.0


async def nerve_cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run, [str(NERVE_BIN), *argv], capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip


async def test_a_second_maint_joins_the_first_and_up_from_the_file_ends_both(
    zk: ZooKeeperServer, kz: KazooClient, tmp_path: Path
) -> None:
    path, port = unique_path(), free_port()
    config = nerve_config({"web": service(zk.hosts, path, free_port(), checks=[])},
                          admin={"port": port})  # fmt: skip
    # The file on disk: no instance_id (the unit gives `-i`), and later a typo being edited.
    on_disk = {k: v for k, v in config.items() if k != "instance_id"}
    config_path = tmp_path / "nerve.json"
    config_path.write_text(json.dumps(on_disk))
    admin = ["--admin", f"http://127.0.0.1:{port}"]
    async with running_nerve(config, config_path) as daemon:
        await until(lambda: children(kz, path), what="registration")
        first = await nerve_cli("maint", "web", "--reason", "disk swap", *admin)
        assert first.returncode == 0, first.stderr
        assert first.stdout == "web: in maintenance: disk swap; not registered\n"
        second = await nerve_cli("maint", "web", "--reason", "deploy", "--for", "1s", *admin)
        assert second.returncode == 0, second.stderr
        rounds = daemon.services["web"].rounds
        await asyncio.sleep(1.5)  # the second one's 1 s ran out ...
        await until(lambda: daemon.services["web"].rounds >= rounds + 3, what="check rounds")
        assert children(kz, path) == []  # ... the first one's repair goes on
        assert second.stdout.splitlines()[0] == (
            "web: joined the maintenance already on (no end): disk swap; the later end holds, "
            "`nerve up` ends both"
        )
        on_disk["services"]["web"]["chekcs"] = on_disk["services"]["web"].pop("checks")
        config_path.write_text(json.dumps(on_disk))
        up = await nerve_cli("up", "web", "-c", str(config_path))
        assert up.returncode == 0, up.stderr
        assert up.stdout.splitlines()[0] == "web: ended the maintenance: disk swap | deploy"
        await until(lambda: children(kz, path), what="registration after `up`")


async def test_maint_drain_during_a_hand_over_withdraws_the_old_registration_first(
    zk: ZooKeeperServer, kz: KazooClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SIGHUP moves web to another ensemble, which is paused (a GC pause, still syncing):
    the old registration stays until the new one is written. `nerve maint --drain` then
    reaches the new service; it returns DRAIN s after the old registration left."""
    # However slow this host is, the hand-over still waits when the command comes.
    monkeypatch.setattr(handover, "HANDOVER_TIMEOUT", 60.0)
    path, port, app = unique_path(), free_port(), free_port()
    config = nerve_config({"web": service(zk.hosts, path, app, checks=[])}, admin={"port": port})
    moved = ZooKeeperServer(workdir=tmp_path / "zk-new").start()
    gone: list[float] = []  # when an observer (a consumer's synapse) saw the old one go

    def watch(names: list[str]) -> None:
        if not names and not gone:
            gone.append(time.monotonic())

    try:
        async with running_nerve(config) as daemon:
            await until(lambda: children(kz, path), what="registration")
            kz.ChildrenWatch(path, watch)
            assert moved.process is not None
            moved.process.pause()
            new = nerve_config({"web": service(moved.hosts, path, app, checks=[])},
                               admin={"port": port})  # fmt: skip
            assert (await daemon.reload(NerveConfig.model_validate(new)))["re_registered"]
            await asyncio.sleep(0.5)
            assert children(kz, path) and daemon._retiring  # the hand-over waits
            maint = await nerve_cli("maint", "web", "--reason", "deploy", "--drain", f"{DRAIN}",
                                    "--admin", f"http://127.0.0.1:{port}")  # fmt: skip
            returned = time.monotonic()
            moved.process.resume()
        assert maint.returncode == 0, (maint.stdout, maint.stderr)
        assert gone, "the old registration left ZooKeeper"
        assert returned - gone[0] >= DRAIN - 0.1, (returned - gone[0], maint.stdout)
        assert maint.stdout.splitlines() == [
            "web: in maintenance: deploy; not registered",
            f"web: drained {DRAIN:g}s after the withdrawal",
        ]
    finally:
        if moved.process is not None:
            moved.process.resume()
        moved.stop()


async def test_a_maint_the_disk_refuses_holds_is_retried_and_survives_the_next_restart(
    zk: ZooKeeperServer, kz: KazooClient, tmp_path: Path
) -> None:
    """The flag file cannot be written (here ``state_dir`` is in its own way, a regular
    file, which refuses the write for any user; the full and read-only disks, and `nerve
    up`: tests/unit/nerve/test_maint_flag_fs.py): in force at once, the command warns (exit
    0), nerve writes it every round until it can, and a restart after that keeps the
    instance out. Before: exit 0 with no word of it, never written later, and the restart
    after the repair registered the instance again (the maintenance lost)."""
    path, port = unique_path(), free_port()
    state = tmp_path / "state"
    state.write_text("")  # in the way: the flag file cannot be written under it
    config = nerve_config({"web": service(zk.hosts, path, free_port(), checks=[])},
                          admin={"port": port}, state_dir=str(state))  # fmt: skip
    config_path = tmp_path / "nerve.json"
    config_path.write_text(json.dumps(config))
    async with running_nerve(config, config_path) as daemon:
        await until(lambda: children(kz, path), what="registration")
        maint = await nerve_cli("maint", "web", "--reason", "bad canary", "-c", str(config_path))
        assert maint.returncode == 0, maint.stderr
        assert maint.stdout == "web: in maintenance: bad canary; not registered\n"
        assert maint.stderr.startswith(
            "warning: web: the maintenance flag file could not be written ("
        ), maint.stderr
        assert children(kz, path) == []  # in force all the same
        state.unlink()
        state.mkdir()  # repaired: the next round writes the flag
        await until(lambda: (state / "web.json").exists(), what="the flag written")
        rounds = daemon.services["web"].rounds
        await until(lambda: daemon.services["web"].rounds >= rounds + 2, what="rounds")
        assert json.loads((state / "web.json").read_text())["reason"] == "bad canary"
    async with running_nerve(config, config_path) as daemon:  # restarted
        rounds = daemon.services["web"].rounds
        await until(lambda: daemon.services["web"].rounds >= rounds + 5, what="rounds")
        assert children(kz, path) == []
        assert daemon.services["web"].state.maintenance == {"admin": "bad canary"}
