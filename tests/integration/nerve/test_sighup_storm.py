"""A storm of SIGHUPs on a real nerve is folded (review s32): at most one reload running and
one after it, which reads the file as it is then; the last file is applied, none is lost.
Before, 20 SIGHUPs in 1 s were 20 reloads in a row, each with its own validating child (7
still queued 4 s later)."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from pathlib import Path

from kazoo.client import KazooClient
from nerve_testlib import TIMEOUT, NerveProcess, nerve_config, unique_path, write_config, zk_service

from testbed.process import wait_until
from testbed.zookeeper import ZooKeeperServer

SIGHUPS = 20


def test_a_sighup_storm_is_at_most_two_reloads_and_the_last_file_is_applied(
    zk: ZooKeeperServer, kz: KazooClient, http_backend_factory, tmp_path: Path,
    nerve_process: Callable[[Path], NerveProcess],
) -> None:  # fmt: skip
    path = unique_path()
    port = http_backend_factory().port

    def config(weight: int) -> dict:
        return nerve_config({"web": zk_service(zk.hosts, path, port, weight=weight)})

    def weights() -> list[int]:
        nodes = kz.get_children(path) if kz.exists(path) else []
        return [json.loads(kz.get(f"{path}/{node}")[0])["weight"] for node in nodes]

    file = write_config(tmp_path / "nerve.json", config(1))
    nerve = nerve_process(file)
    wait_until(lambda: weights() == [1], TIMEOUT, what="the registration", interval=0.05)
    for n in range(SIGHUPS):  # each SIGHUP after a write: the last file has weight 21
        write_config(file, config(n + 2))
        nerve.signal(signal.SIGHUP)
        time.sleep(0.002)
    wait_until(lambda: weights() == [SIGHUPS + 1], TIMEOUT, what="the last file's weight",
               interval=0.05)  # fmt: skip
    time.sleep(1.0)  # (a reload still to come would log by now)
    log = nerve.log()
    reloads = log.count("event=config_reloaded")
    assert 1 <= reloads <= 2, f"{reloads} reloads for {SIGHUPS} SIGHUPs"
    assert log.count("action=reload ") + log.count("action=reload\n") == 1
    assert weights() == [SIGHUPS + 1]
