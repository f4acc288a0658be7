"""`nerve maint` / `nerve up` as operators run them, against a real nerve and ZooKeeper:
two operators on one service, and `-c FILE` with a file the running nerve did not start
from as it is."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

from kazoo.client import KazooClient
from nerve_testlib import NERVE_BIN, children, nerve_config, running_nerve, unique_path, until
from nerve_testlib import zk_service as service

from testbed.process import free_port
from testbed.zookeeper import ZooKeeperServer


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
