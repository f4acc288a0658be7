"""READY=1 to systemd (smartstack.sd_notify, the units' Type=notify): sent once the daemon
serves and handles SIGHUP, so `systemctl restart x && systemctl reload x` never reaches a
Python start that SIGHUP still ends. A local unix datagram socket stands in for systemd's.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from start_window import DAEMONS, daemon_config, daemon_process, sighup_disposition

from smartstack import sd_notify
from testbed.process import ManagedProcess, free_port, wait_until


@contextlib.contextmanager
def notify_socket(abstract: bool = False) -> Iterator[tuple[str, socket.socket]]:
    """($NOTIFY_SOCKET's value, the bound socket): a short path (108 bytes at most) or an
    abstract name (``@...``), as systemd hands out both."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        if abstract:
            name = f"smartstack-test-{uuid.uuid4().hex}"
            sock.bind("\0" + name)
            yield "@" + name, sock
        else:
            with tempfile.TemporaryDirectory(prefix="notify-", dir="/tmp") as directory:
                path = os.path.join(directory, "notify")
                sock.bind(path)
                yield path, sock


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_ready_is_one_datagram_and_children_do_not_inherit_the_socket(
    abstract: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    with notify_socket(abstract) as (address, sock):
        monkeypatch.setenv(sd_notify.ENV, address)
        assert sd_notify.ready()
        sock.settimeout(5)
        assert sock.recv(4096) == b"READY=1"
        assert sd_notify.ENV not in os.environ  # (exec checks, a managed HAProxy)
        assert not sd_notify.ready()  # nothing to tell any more


def test_without_systemd_nothing_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(sd_notify.ENV, raising=False)
    assert not sd_notify.ready()


@pytest.mark.parametrize("address", ["/nonexistent/notify", "vsock:2:1234"])
def test_a_socket_that_cannot_be_reached_is_logged_not_fatal(
    address: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(sd_notify.ENV, address)
    with caplog.at_level(logging.WARNING, logger="smartstack.sd_notify"):
        assert not sd_notify.ready()
    assert [r.getMessage() for r in caplog.records] == ["systemd_notify_failed"]


def answers(port: int) -> bool:
    """The admin server answers (any status: /health may say 503, the registry is down)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
            return True
    except urllib.error.HTTPError:
        return True


def receive(sock: socket.socket, proc: ManagedProcess, timeout: float) -> bytes:
    """The daemon's first datagram; fails at once if the daemon dies first."""
    sock.settimeout(0.1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        proc.check_alive()
        with contextlib.suppress(TimeoutError):
            return sock.recv(4096)
    raise AssertionError(f"no READY=1 within {timeout} s\n{proc.log_tail()}")


@pytest.mark.parametrize("name", DAEMONS)
def test_the_daemon_says_ready_once_it_serves_and_a_sighup_is_a_reload(
    name: str, tmp_path: Path
) -> None:
    """At READY=1 the admin server answers and SIGHUP is the loop's: one sent right then
    reloads the config (the old daemons never said READY=1: under Type=notify systemd
    would have failed their start after TimeoutStartSec)."""
    admin_port = free_port()
    config = daemon_config(name, tmp_path, admin_port)
    with notify_socket() as (address, sock):
        proc = daemon_process(name, config, tmp_path, {sd_notify.ENV: address}).start()
        try:
            assert receive(sock, proc, 30) == b"READY=1"
            assert sighup_disposition(proc.pid)[0]  # caught: the loop's handler
            assert answers(admin_port)
            os.kill(proc.pid, signal.SIGHUP)
            wait_until(lambda: proc.check_alive() or "config_reloaded" in proc.log_tail(200),
                       30, what=f"{name} to reload")  # fmt: skip
            sock.settimeout(0.5)
            with pytest.raises(TimeoutError):  # once: a reload is not a second start
                sock.recv(4096)
        finally:
            proc.stop(timeout=10)
        assert proc.returncode == 0, proc.log_tail()
