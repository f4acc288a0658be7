"""The unit tier's guard refuses and records sockets and processes, and restores them after."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys

import pytest
from unit_guard import UnitTierViolation, refuse_processes_and_sockets


async def test_sockets_and_processes_are_refused_recorded_and_restored() -> None:
    before = {name: vars(socket.socket).get(name) for name in ("connect", "bind")}
    with refuse_processes_and_sockets() as attempts:
        with pytest.raises(UnitTierViolation), socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
        with pytest.raises(UnitTierViolation), socket.socket() as sock:
            sock.connect(("127.0.0.1", 9))
        with pytest.raises(UnitTierViolation):
            subprocess.run([sys.executable, "-c", "pass"], check=True)
        with pytest.raises(UnitTierViolation):
            await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
        with contextlib.suppress(Exception), socket.socket() as sock:
            sock.connect_ex(("127.0.0.1", 9))  # swallowed by the code under test: still recorded
    assert attempts == [
        "socket.bind",
        "socket.connect",
        "subprocess.Popen",
        "asyncio.create_subprocess_exec",
        "socket.connect_ex",
    ]
    # Whatever was in place before (the guard of this very test) is back.
    assert {name: vars(socket.socket).get(name) for name in ("connect", "bind")} == before
