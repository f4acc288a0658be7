"""A managed HAProxy whose socket files were removed (synapse.haproxy.replacement): which
master is taken for one (``adoption``), which sockets are missing, the directories made
again, and a process's age from /proc (``pids``)."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path

import pytest

from synapse.haproxy import adoption, pids
from synapse.haproxy.adoption import find_master
from synapse.haproxy.replacement import make_dirs, missing_sockets
from synapse.haproxy.settings import Settings
from synapse.haproxy.sockets import SocketUnavailable


class Unanswered:
    """A master socket nothing answers on (its file is gone)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    async def show_proc(self) -> None:
        raise SocketUnavailable(f"{self.path}: No such file or directory")


def _find(tmp_path: Path, monkeypatch, masters: tuple[int, ...], age: float, timeout: float):
    monkeypatch.setattr(adoption, "running_masters", lambda config, socket: masters)
    monkeypatch.setattr(pids, "age", lambda pid: age)
    socket = tmp_path / "haproxy-master.sock"
    client = Unanswered(socket)
    return asyncio.run(find_master(client, tmp_path / "h.cfg", socket, timeout, "t"))  # type: ignore[arg-type]


def test_a_lone_old_master_without_its_socket_file_is_taken_at_the_second_look(
    tmp_path, monkeypatch, caplog
):
    began = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="synapse.haproxy.managed"):
        found = _find(tmp_path, monkeypatch, (10,), age=60.0, timeout=10.0)
    assert found.socketless and found.proc is None and found.masters == (10,)
    assert time.monotonic() - began < 2.0  # (was: `timeout`, then refused for good)
    assert [r.message for r in caplog.records] == ["haproxy_master_socketless"]


@pytest.mark.parametrize(
    "masters, age, why",
    [((10,), 0.1, "younger than a start may take to bind it"), ((10, 20), 60.0, "two masters")],
)
def test_otherwise_an_unanswered_master_is_still_refused(tmp_path, monkeypatch, masters, age, why):
    found = _find(tmp_path, monkeypatch, masters, age=age, timeout=0.3)
    assert not found.socketless, why
    assert "not starting a second one" in found.error


def test_a_socket_file_that_is_there_is_not_missing(tmp_path, monkeypatch):
    (tmp_path / "haproxy-master.sock").touch()  # (it does not answer: busy, re-executing)
    found = _find(tmp_path, monkeypatch, (10,), age=60.0, timeout=0.3)
    assert not found.socketless and found.masters == (10,)


def _settings(tmp_path: Path) -> Settings:
    return Settings(
        config_path=tmp_path / "cfg" / "h.cfg", runtime_sockets=(str(tmp_path / "a" / "h.sock"),),
        managed=True, binary="haproxy", master_socket=tmp_path / "m" / "master.sock",
        pid_file=None, state_file=None, candidate_path=None, check_command=None,
    )  # fmt: skip


def test_the_missing_sockets_are_named_and_their_directories_made_once(tmp_path, caplog):
    settings = _settings(tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "h.sock").touch()
    assert missing_sockets(settings) == [str(tmp_path / "m" / "master.sock")]
    paths = [tmp_path / "m" / "master.sock", tmp_path / "m" / "other", tmp_path / "a" / "h.sock"]
    with caplog.at_level(logging.INFO, logger="synapse.haproxy.managed"):
        make_dirs(paths)
        make_dirs(paths)
    assert (tmp_path / "m").is_dir()
    created = [r for r in caplog.records if r.message == "haproxy_dir_created"]
    assert [r.smartstack_fields["path"] for r in created] == [str(tmp_path / "m")]


def test_a_process_age_comes_from_its_start_time_and_the_uptime(tmp_path):
    ticks = os.sysconf("SC_CLK_TCK")
    (tmp_path / "uptime").write_text("1000.50 3000.00\n")
    (tmp_path / "7").mkdir()
    rest = " ".join(["0"] * 18)  # fields 4-21; the start time is field 22
    (tmp_path / "7" / "stat").write_text(f"7 (hap roxy) S {rest} {900 * ticks} 0 0\n")
    assert pids.age(7, tmp_path) == pytest.approx(100.5)
    assert pids.age(8, tmp_path) is None  # (gone)
