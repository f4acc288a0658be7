"""A ZooKeeper session under 4 s (nerve's zk_session_timeout) is warned about once, when
its connection is made: on a far link it flaps (a 1 s session at ~250 ms RTT: 97
reconnects in 120 s), and a production ZooKeeper's floor is 4 s by default anyway."""

from __future__ import annotations

import asyncio
import logging

import pytest

from smartstack.zookeeper import ZooKeeperConnection


@pytest.mark.parametrize(
    ("session_s", "warned"), [(3.0, True), (1.0, True), (4.0, False), (10.0, False)]
)
def test_a_short_session_is_warned_about_naming_the_key(
    caplog: pytest.LogCaptureFixture, session_s: float, warned: bool
) -> None:
    loop = asyncio.new_event_loop()
    try:
        with caplog.at_level(logging.INFO, logger="smartstack.zookeeper"):
            ZooKeeperConnection(["127.0.0.1:1"], loop, session_timeout=session_s)  # not started
    finally:
        loop.close()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage() for r in warnings] == (["zk_session_timeout_short"] if warned else [])
    if warned:
        assert "zk_session_timeout" in repr(vars(warnings[0]))  # the key, with its value
