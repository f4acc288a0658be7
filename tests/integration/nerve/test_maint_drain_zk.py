"""``nerve maint --drain``: a real nerve on a real ZooKeeper and the command as a
subprocess. It returns ``--drain`` seconds after the registration left ZooKeeper (as an
observer, a consumer's synapse, sees it), not when nerve answered."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from pathlib import Path

from kazoo.client import KazooClient
from nerve_testlib import NERVE_BIN, children, nerve_config, running_nerve, unique_path, until
from nerve_testlib import zk_service as service

from testbed.process import free_port
from testbed.zookeeper import ZooKeeperServer

DRAIN = 1.0


async def test_maint_returns_drain_seconds_after_the_registry_has_the_withdrawal(
    zk: ZooKeeperServer, kz: KazooClient, tmp_path: Path
) -> None:
    path, port = unique_path(), free_port()
    config = nerve_config(
        {"web": service(zk.hosts, path, free_port(), checks=[])},
        admin={"port": port},
        state_dir=str(tmp_path / "state"),
    )
    gone: list[float] = []  # when the observer saw the registration go

    def watch(names: list[str]) -> None:
        if not names and not gone:
            gone.append(time.monotonic())

    async with running_nerve(config):
        await until(lambda: children(kz, path), what="registration")
        kz.ChildrenWatch(path, watch)
        maint = [str(NERVE_BIN), "maint", "web", "--reason", "deploy", "--drain", f"{DRAIN}",
                 "--admin", f"http://127.0.0.1:{port}"]  # fmt: skip
        done = await asyncio.to_thread(
            subprocess.run, maint, capture_output=True, text=True, timeout=30, check=False
        )
        returned = time.monotonic()
    assert done.returncode == 0, done.stderr
    assert gone, "the registration left ZooKeeper"
    # (the observer hears of the delete a little after nerve does: 0.1 s of slack)
    assert DRAIN - 0.1 <= returned - gone[0] < DRAIN + 5, (returned - gone[0], done.stdout)
    assert done.stdout.splitlines() == [
        "web: in maintenance: deploy; not registered",
        f"web: drained {DRAIN:g}s after the withdrawal",
    ]
    assert json.loads((tmp_path / "state" / "web.json").read_text())["reason"] == "deploy"
