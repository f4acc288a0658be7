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
from synapse.haproxy.answers import ProcInfo
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


def test_ours_forking_its_worker_between_two_looks_is_not_moved(monkeypatch, caplog) -> None:
    """A master started under our socket (HAProxy's own container: ``managed.launch: false``)
    forked its worker between the look under our socket and the one under any: it was taken
    for one under another socket (``haproxy_master_moved``) and replaced, which a synapse that
    starts no HAProxy cannot do (the start failed). It is looked for again instead."""
    looks: list[Path | None] = []

    def running(config: Path, socket: Path | None) -> tuple[int, ...]:
        looks.append(socket)
        return () if len(looks) == 1 else (30,)  # (its worker forked after the first look)

    class AnswersLater(Unanswered):
        asked = 0

        async def show_proc(self):  # type: ignore[override]
            self.asked += 1
            if self.asked == 1:
                await super().show_proc()
            return ProcInfo(master_pid=None, workers=(31,))

    monkeypatch.setattr(adoption, "running_masters", running)
    with caplog.at_level(logging.WARNING, logger="synapse.haproxy.managed"):
        found = asyncio.run(find_master(AnswersLater(), CONFIG, SOCKET, 5.0, "t"))  # type: ignore[arg-type]
    assert found.proc is not None and found.proc.workers == (31,) and not found.moved
    assert [r.message for r in caplog.records] == []
