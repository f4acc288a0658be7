"""Logs for 3 a.m.: one timestamp format, repeated failures logged once per state change
with a count, and kazoo's own lines naming the ensemble they are about."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path

from smartstack.logs import FailureStreak, JsonFormatter, KazooLog, KeyValueFormatter, event
from smartstack.zookeeper import ZooKeeperConnection
from testbed.process import free_port
from testbed.zookeeper import ZooKeeperServer

log = logging.getLogger("test.streaks")


def test_both_formats_carry_the_same_timestamp(caplog) -> None:
    with caplog.at_level(logging.INFO, logger="test.streaks"):
        event(log, "something", n=1)
    record = caplog.records[-1]
    kv_stamp = KeyValueFormatter().format(record).split(" ", 1)[0].removeprefix("ts=")
    json_stamp = json.loads(JsonFormatter().format(record))["ts"]
    assert kv_stamp == json_stamp
    assert time.strptime(json_stamp, "%Y-%m-%dT%H:%M:%S.%fZ")


def test_a_failure_streak_logs_its_start_its_kind_changes_reminders_and_its_end(caplog) -> None:
    now = [100.0]
    streak = FailureStreak(log, "thing_failed", "thing_recovered", remind_every=60,
                           clock=lambda: now[0])  # fmt: skip
    with caplog.at_level(logging.INFO, logger="test.streaks"):
        for _ in range(50):  # one failure a second: one line, not fifty
            streak.failure("ConnectionRefusedError: [Errno 111]", target="a")
            now[0] += 1
        streak.failure("TimeoutError: no answer", target="a")  # another kind: logged
        now[0] += 60
        streak.failure("TimeoutError: no answer", target="a")  # a reminder after 60 s
        streak.success(target="a")
        streak.success(target="a")  # nothing was failing any more: silent
    lines = [(r.getMessage(), r.smartstack_fields) for r in caplog.records]
    assert [name for name, _ in lines] == ["thing_failed"] * 3 + ["thing_recovered"]
    assert [fields["failures"] for _, fields in lines] == [1, 51, 52, 52]
    assert lines[-1][1]["seconds"] == 110.0
    assert lines[0][1]["error"].startswith("ConnectionRefusedError")


def test_kazoo_lines_name_their_ensemble_in_both_formats(caplog) -> None:
    adapter = KazooLog("10.0.0.1:2181,10.0.0.2:2181")
    with caplog.at_level(logging.INFO, logger="kazoo.client"):
        adapter.info("Zookeeper connection established, state: %s", "CONNECTED")
    record = caplog.records[-1]
    kv = KeyValueFormatter().format(record)
    assert kv.endswith('msg="Zookeeper connection established, state: CONNECTED" '
                       "zk=10.0.0.1:2181,10.0.0.2:2181"), kv  # fmt: skip
    assert json.loads(JsonFormatter().format(record))["zk"] == "10.0.0.1:2181,10.0.0.2:2181"


async def test_an_unreachable_ensemble_is_one_kazoo_line_then_a_count_when_it_is_back(
    caplog, tmp_path: Path
) -> None:
    """A real kazoo client retries a closed port several times a second: one warning for the
    outage, and zk_connected says how many attempts failed once a real ZooKeeper is there."""
    port = free_port()
    conn = ZooKeeperConnection([f"127.0.0.1:{port}"], asyncio.get_running_loop(), 5.0)
    server = None
    with caplog.at_level(logging.INFO):
        conn.start()
        try:
            deadline = time.monotonic() + 20
            while conn.kazoo_log.streak.count < 3:  # kazoo has failed three times
                assert time.monotonic() < deadline, "kazoo never failed to connect"
                await asyncio.sleep(0.05)
            server = await asyncio.to_thread(ZooKeeperServer(tmp_path / "zk", port=port).start)
            await conn.wait_connected(30)
        finally:
            await conn.close()
            if server is not None:
                await asyncio.to_thread(server.stop)
    kazoo = [r for r in caplog.records if r.name == "kazoo.client" and r.levelno >= logging.WARNING]
    repeated = [r for r in kazoo if r.getMessage().startswith(("Connection dropped",
                                                               "Connection time-out"))]  # fmt: skip
    assert len(repeated) == 1, [r.getMessage() for r in kazoo]
    assert repeated[0].smartstack_context == {"zk": f"127.0.0.1:{port}", "failures": 1}
    connected = [r for r in caplog.records if r.getMessage() == "zk_connected"]
    assert connected and connected[0].smartstack_fields["failed_attempts"] >= 3
