"""Checks of one port never arrive as one burst: a real nerve, real ZooKeeper, and one
plain Python service (http.server, listen backlog 5, the stdlib's default) checked by
many services, or by one service's many checks (nerve/cadence.py).

Before, every service's rounds started in the same instant and a service's checks
together: the SYNs of a round overflowed the port's accept queue, the dropped one was
resent after 1 s, past the 0.1 s timeout, and `fall: 1` withdrew healthy services
(the review's exp4.py: 12 services, 64-94 false withdrawals in 40 s; exp5.py: one service
with 10 checks, 5-10 in 30 s)."""

from __future__ import annotations

import functools
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kazoo.client import KazooClient
from nerve_testlib import children, nerve_config, unique_path, write_config, zk_service

from testbed.process import ManagedProcess, wait_until
from testbed.zookeeper import ZooKeeperServer

WATCH_S = 10.0  # seconds of healthy service watched for a withdrawal (20 rounds)
# Under a second, so a dropped SYN (resent after 1 s) still fails the check as before the
# fix, with room for a loaded CI host to accept and answer (0.1 s flaked there, and 0.3 s
# once as CI's halves started: http.server's thread per request on a busy machine).
TIMEOUT_S = 0.6
# http.server's TCPServer listens with its default backlog, request_queue_size = 5.
SERVER = """
import http.server, sys
class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", "2"); self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *args): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Health).serve_forever()
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def accepting(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def watch_one_port(
    zk: ZooKeeperServer,
    kz: KazooClient,
    nerve_process,
    tmp_path: Path,
    services: int,
    checks: int,
    meanwhile: Callable[[Any], None],  # given the NerveProcess
) -> None:
    """``services`` services of ``checks`` HTTP checks each on one backlog-5 port, all
    healthy: none is withdrawn while ``meanwhile`` runs (and 1.2 s after it)."""
    port = free_port()
    server = ManagedProcess([sys.executable, "-c", SERVER, str(port)], tmp_path, "http")
    server.start()
    try:
        wait_until(lambda: accepting(port), 10, what="the service")
        paths = [unique_path() for _ in range(services)]
        probes = [
            {"type": "http", "uri": f"/health/{n}", "timeout": TIMEOUT_S, "rise": 1, "fall": 1}
            for n in range(checks)
        ]
        config = {
            f"s{n}": zk_service(zk.hosts, path, port, check_interval=0.5, checks=probes)
            for n, path in enumerate(paths)
        }
        nerve = nerve_process(write_config(tmp_path / "nerve.json", nerve_config(config)))
        wait_until(lambda: all(children(kz, p) for p in paths), 20, what="registrations")
        logged = len(nerve.log())
        meanwhile(nerve)
        time.sleep(1.2)  # the last checks answered or timed out
        watched = nerve.log()[logged:]
        withdrawn = [line for line in watched.splitlines() if "event=service_withdrawn" in line]
        assert not withdrawn, f"{len(withdrawn)} false withdrawals: {withdrawn}"
        assert all(children(kz, p) for p in paths)
        nerve.process.stop(timeout=10)
    finally:
        server.stop(timeout=5)


OnePortWatch = Callable[[int, int, Callable[[Any], None]], None]


@pytest.fixture
def one_port_watch(
    zk: ZooKeeperServer, kz: KazooClient, nerve_process, tmp_path: Path
) -> OnePortWatch:
    """watch_one_port on this test's servers: (services, checks, meanwhile)."""
    return functools.partial(watch_one_port, zk, kz, nerve_process, tmp_path)


@pytest.mark.parametrize(
    ("services", "checks"),
    [(12, 1), (1, 12)],
    ids=["12-services-one-port", "one-service-12-checks"],
)
def test_checks_of_one_backlog_5_port_withdraw_no_healthy_service(
    one_port_watch: OnePortWatch, services: int, checks: int
) -> None:
    one_port_watch(services, checks, lambda nerve: time.sleep(WATCH_S))
