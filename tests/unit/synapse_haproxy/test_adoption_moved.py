"""A master left under a master socket, config file or binary the settings no longer name:
which are found (``adoption``, ``moved``, ``binary_check``)."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path

from synapse.haproxy import adoption
from synapse.haproxy.adoption import find_master
from synapse.haproxy.binary_check import other_binary
from synapse.haproxy.sockets import SocketUnavailable

CONFIG, SOCKET = Path("/run/s/haproxy.cfg"), Path("/run/s/haproxy-master.sock")


class Unanswered:
    async def show_proc(self) -> None:
        raise SocketUnavailable(f"{SOCKET}: No such file or directory")


def test_it_is_adopted_by_its_pid_to_be_replaced(monkeypatch, caplog) -> None:
    """Before, nothing ran on our socket: a second master was started beside it."""
    found_by = {SOCKET: (), None: (30,)}
    monkeypatch.setattr(adoption, "running_masters", lambda config, socket: found_by[socket])
    with caplog.at_level(logging.WARNING, logger="synapse.haproxy.managed"):
        found = asyncio.run(find_master(Unanswered(), CONFIG, SOCKET, 5.0, "t"))  # type: ignore[arg-type]
    assert found.socketless and found.proc is None and found.masters == (30,)
    assert found.moved.startswith("its master socket moved")
    assert [r.message for r in caplog.records] == ["haproxy_master_moved"]


def test_a_master_running_another_binary_is_told() -> None:
    me = os.getpid()  # (runs sys.executable, resolved)
    assert other_binary(me, sys.executable) is None
    assert other_binary(me, "/bin/true") == os.path.realpath(sys.executable)
