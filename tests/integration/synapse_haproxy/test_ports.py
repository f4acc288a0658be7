"""Frontend ports another process listens on (SO_REUSEPORT would let HAProxy share them)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from synapse.haproxy.ports import _decode, bind_addresses, foreign_listeners


def test_bind_addresses_of_a_config() -> None:
    text = """
frontend web
    bind localhost:3213
    bind 127.0.0.2:80,ipv4@127.0.0.3:81 accept-proxy
    bind :8080-8081
    bind [::1]:9000
    bind unix@/run/h.sock
    bind /run/other.sock
listen stats
    bind *:8404
"""
    found = {(written, ip, port) for written, ip, port in bind_addresses(text)}
    assert ("localhost:3213", "127.0.0.1", 3213) in found
    assert ("127.0.0.2:80", "127.0.0.2", 80) in found
    assert ("ipv4@127.0.0.3:81", "127.0.0.3", 81) in found
    assert {(":8080-8081", "0.0.0.0", 8080), (":8080-8081", "0.0.0.0", 8081)} <= found
    assert ("[::1]:9000", "::1", 9000) in found
    assert ("*:8404", "0.0.0.0", 8404) in found
    assert not any("sock" in written for written, _, _ in found)


def test_proc_net_addresses_decode() -> None:
    assert _decode("0100007F:0CB9") == ("127.0.0.1", 3257)
    assert _decode("00000000000000000000000001000000:1F90") == ("::1", 8080)


@pytest.fixture
def reuseport_listener() -> Iterator[int]:
    """A listener with SO_REUSEPORT, as HAProxy opens them: a second one could share it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


def test_a_live_listener_is_a_clash_with_its_owner(reuseport_listener: int) -> None:
    port = reuseport_listener
    [clash] = foreign_listeners(f"frontend f\n    bind 127.0.0.1:{port}\n")
    assert clash.port == port
    assert clash.owners == (f"pid {os.getpid()} ({Path('/proc/self/comm').read_text().strip()})",)
    assert str(clash).startswith(f"port {port} (127.0.0.1:{port}) is already bound by pid ")
    # A wildcard bind overlaps it too; another address or port does not.
    assert foreign_listeners(f"    bind :{port}\n")
    assert foreign_listeners(f"    bind 127.0.0.2:{port}\n") == []
    # HAProxy's `::` is dual-stack: it overlaps an IPv4 listener too, unless v6only.
    [dual] = foreign_listeners(f"    bind :::{port}\n")
    assert dual.address == f":::{port}"
    assert foreign_listeners(f"    bind :::{port} v6only\n") == []
    # Our own HAProxy's listeners are not a clash (a reload keeps its ports).
    assert foreign_listeners(f"    bind 127.0.0.1:{port}\n", {os.getpid()}) == []


LISTEN_SCRIPT = """
import socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
s.bind(("127.0.0.1", 0))
s.listen()
print(s.getsockname()[1], flush=True)
time.sleep(60)
"""


def test_a_process_running_our_config_file_is_ours_only_when_synapse_started_or_adopted_it(
    tmp_path: Path,
) -> None:
    """A master left under another master socket runs our config file too: treated as ours,
    a second master was started beside it, and it served on, never updated."""
    config = str(tmp_path / "haproxy.cfg")
    proc = subprocess.Popen(
        [sys.executable, "-c", LISTEN_SCRIPT, "-f", config], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        text = f"    bind 127.0.0.1:{port}\n"
        [clash] = foreign_listeners(text)
        assert clash.owners[0].startswith(f"pid {proc.pid} (") and clash.pids == (proc.pid,)
        assert foreign_listeners(text, {proc.pid}) == []
    finally:
        proc.kill()
        proc.wait()


def test_sock_diag_and_proc_agree_on_the_listeners(reuseport_listener: int) -> None:
    from synapse.haproxy.ports import _listeners_netlink, _listeners_proc

    netlink = _listeners_netlink()
    assert any(port == reuseport_listener for _, port, _ in netlink)
    # Sockets may come and go between the two reads (other tests): compare ours only.
    assert {x for x in netlink if x[1] == reuseport_listener} == {
        x for x in _listeners_proc() if x[1] == reuseport_listener
    }
