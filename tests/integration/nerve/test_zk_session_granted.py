"""A ZooKeeper whose maxSessionTimeout is below nerve's zk_session_timeout grants the
shorter session: nerve says so (`zk_session_negotiated`), and its restart stop (SIGUSR2)
tells how long the node it leaves lasts by the granted value, not the asked one (asked
30 s of a 4 s maximum, it said `expire_within_s=30.0` and the node was gone 3.8 s later).

Real nerve process, real ZooKeeper."""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Callable
from pathlib import Path

from kazoo.client import KazooClient
from nerve_testlib import (
    TIMEOUT,
    NerveProcess,
    children,
    nerve_config,
    unique_path,
    write_config,
    zk_service,
)

from testbed.process import free_port, wait_until
from testbed.zookeeper import ZooKeeperServer

ASKED_S, GRANTED_S = 20.0, 3.0


def test_the_session_the_server_grants_is_the_one_nerve_reports(
    tmp_path: Path, nerve_process: Callable[[Path], NerveProcess]
) -> None:
    server = ZooKeeperServer(workdir=tmp_path / "zk", extra_config=[
        f"maxSessionTimeout={int(GRANTED_S * 1000)}"]).start()  # fmt: skip
    kz = KazooClient(hosts=server.hosts)
    try:
        kz.start(TIMEOUT)
        path = unique_path()
        # No checks: always healthy; a next nerve needs 1.5 s + 2 s of start (> 3 s granted).
        block = zk_service(server.hosts, path, free_port(), checks=[], check_interval=1.5,
                           zk_session_timeout=ASKED_S)  # fmt: skip
        nerve = nerve_process(write_config(tmp_path / "nerve.json", nerve_config({"web": block})))
        nerve.wait_for_log("znode_created")
        assert wait_until(lambda: children(kz, path), TIMEOUT, what="the node", interval=0.05)
        log = nerve.log()
        assert len(re.findall(r"zk_session_negotiated .*asked_s=20\.0 granted_s=3\.0", log)) == 1, (
            log[-2000:]
        )
        assert "zk_session_timeout_short" not in log  # (20 s asked is not short)

        nerve.signal(signal.SIGUSR2)
        sent = time.monotonic()
        assert nerve.wait(15) == 0
        log = nerve.log()
        assert f"expire_within_s={GRANTED_S}" in log, log[-2000:]
        assert "restart_stop_session_short" in log  # 3 s < 1.5 s + 2 s: a gap is likely
        wait_until(lambda: not children(kz, path), GRANTED_S + 10, what="the left node to expire",
                   interval=0.05)  # fmt: skip
        assert time.monotonic() - sent < GRANTED_S + 5  # not 20 s
    finally:
        kz.stop()
        kz.close()
        server.stop()
