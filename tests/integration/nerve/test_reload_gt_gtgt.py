"""A SIGHUP between a script's ``>`` and ``>>`` of the config file withdraws nothing the
complete file keeps (in process, real ZooKeeper, a real file written by a thread).

Review s32: the first part, valid YAML without ``api``, SIGHUP, a 1.0 s pause, then the
rest: both nerves logged ``removed=api`` and api had no registration for 6.2 s (until the
next SIGHUP). A reload that removes services from a file changed a moment ago now waits for
the file to be still and applies it whole (smartstack.reload_settle).
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import yaml
from kazoo.client import KazooClient
from nerve_testlib import children_seen, running_nerve, unique_path, until, zk_service

from testbed.process import free_port
from testbed.zookeeper import ZooKeeperServer

NOOP = [{"type": "noop"}]


async def test_a_sighup_between_gt_and_gtgt_keeps_the_service_written_last(
    zk: ZooKeeperServer, kz: KazooClient, tmp_path: Path
) -> None:
    api_path = unique_path()
    config = {  # (in this order: the cut leaves api out, and nothing else)
        "admin": {"port": None},
        "instance_id": "i-gtgt",
        "services": {
            "web": zk_service(zk.hosts, unique_path(), free_port(), checks=NOOP),
            "api": zk_service(zk.hosts, api_path, free_port(), checks=NOOP),
        },
    }
    text = yaml.safe_dump(config, sort_keys=False)
    cut = text.index("\n  api:\n") + 1
    path = tmp_path / "nerve.yaml"
    path.write_text(text)
    async with running_nerve(config, path) as daemon:
        await until(lambda: daemon.services["api"].reporter.registered, what="api registered")
        with children_seen(kz, api_path) as seen:
            path.write_text(text[:cut])  # `>`: closed again, as a script's first command

            def second_writer() -> None:
                time.sleep(1.2)
                with path.open("a") as file:  # `>>`
                    file.write(text[cut:])

            writer = threading.Thread(target=second_writer)
            writer.start()
            try:
                assert await daemon.reload_from_file()  # the SIGHUP
            finally:
                await asyncio.to_thread(writer.join)
            await asyncio.sleep(0.5)  # (a withdrawal under way would show by now)
        assert sorted(daemon.services) == ["api", "web"]
        assert seen and all(seen), seen  # api never without its registration
