"""A ZooKeeper session under 4 s (nerve's zk_session_timeout) is warned about once, when
its connection is made: on a far link it flaps (a 1 s session at ~250 ms RTT: 97
reconnects in 120 s), and a production ZooKeeper's floor is 4 s by default anyway. So is
a session the server grants shorter than asked (its maxSessionTimeout), or under 4 s."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from smartstack.logs import _FIELDS
from smartstack.zk_session import SessionTimeout
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


def negotiated(caplog: pytest.LogCaptureFixture, asked_s: float, *granted_ms: int) -> list[Any]:
    session = SessionTimeout(asked_s, "zk:2181")
    with caplog.at_level(logging.INFO, logger="smartstack.zookeeper"):
        for ms in granted_ms:
            session.granted(ms)
    assert session.seconds == (granted_ms[-1] / 1000 if granted_ms else asked_s)
    return [
        getattr(r, _FIELDS) for r in caplog.records if r.getMessage() == "zk_session_negotiated"
    ]


def test_a_session_the_server_grants_shorter_is_warned_about_with_both_values(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """maxSessionTimeout 4 s, 30 s asked: nodes outlive a dead nerve by 4 s, not 30 s."""
    warned = negotiated(caplog, 30.0, 4000, 4000, 4000)  # each reconnection's handshake
    assert [(w["asked_s"], w["granted_s"]) for w in warned] == [(30.0, 4.0)]  # once


@pytest.mark.parametrize(
    ("asked_s", "granted_ms", "warnings"),
    [
        (10.0, [10000], 0),  # granted as asked
        (30.0, [4000, 20000], 2),  # a change, still lower (another server's bounds)
        (30.0, [4000, 30000], 1),  # then as asked: nothing to say
        (2.0, [2000], 0),  # as asked: zk_session_timeout_short said it at start
        (1.0, [3000], 1),  # raised by minSessionTimeout, still under 4 s
        (1.0, [4000], 0),  # raised to 4 s
    ],
)
def test_only_a_lower_or_short_granted_session_is_warned_about(
    caplog: pytest.LogCaptureFixture, asked_s: float, granted_ms: list[int], warnings: int
) -> None:
    assert len(negotiated(caplog, asked_s, *granted_ms)) == warnings


def test_a_connection_uses_the_asked_timeout_until_a_handshake_answers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert negotiated(caplog, 30.0) == []
