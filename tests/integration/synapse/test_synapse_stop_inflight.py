"""A synapse that takes its HAProxy down lets the requests in flight through it finish.

- ``managed.stop_on_exit: true``: SIGTERM to synapse soft-stops HAProxy; slow requests in
  flight are answered, and a new connection meanwhile is refused at once (not queued in
  synapse's copy of the listener, where nobody would ever accept it).
- ``auto`` (the default) as in our image: ``tini -- synapse`` as PID 1 of its own PID
  namespace (``unshare --pid``, as ``docker run``). ``docker stop`` sends SIGTERM to tini:
  synapse ends, then tini, and the kernel kills what is left in the namespace, so HAProxy is
  soft-stopped first rather than released.

Before (synapse 41d786b): all of them were cut at the SIGTERM (HAProxy's hard stop; released
and then killed with the namespace in a container).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from synapse_e2e import Synapse, refused, wait_serving

from testbed.process import ManagedProcess, free_port, wait_until

SLOW = 4.0  # seconds each request takes at the backend (HAProxy's timeouts are 5 s)
CLIENTS = 4


class _Slow(socketserver.BaseRequestHandler):
    """``GET /slow`` answers after SLOW seconds, anything else at once; the body is "s"."""

    server: _Server

    def handle(self) -> None:
        data = b""
        while b"\r\n\r\n" not in data and (chunk := self.request.recv(4096)):
            data += chunk
        if data.startswith(b"GET /slow"):
            self.server.arrived.release()
            time.sleep(SLOW)
        self.request.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\ns")


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    arrived: threading.Semaphore


@pytest.fixture
def backend() -> Iterator[_Server]:
    server = _Server(("127.0.0.1", free_port()), _Slow)
    server.arrived = threading.Semaphore(0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def slow_get(port: int, answers: list[str]) -> None:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
            answers.append(sock.recv(4096).split(b"\r\n", 1)[0].decode() or "closed")
    except OSError as err:
        answers.append(repr(err))


def in_flight(backend: _Server, port: int) -> tuple[list[str], list[threading.Thread]]:
    """CLIENTS slow requests, returned once the backend has all of them."""
    answers: list[str] = []
    threads = [threading.Thread(target=slow_get, args=(port, answers)) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for _ in range(CLIENTS):
        assert backend.arrived.acquire(timeout=10), "the slow requests did not reach the backend"
    return answers, threads


def synapse_for(backend: _Server, port: int) -> Synapse:
    service = {
        "discovery": {"method": "base"},
        "default_servers": [{"name": "s", "host": "127.0.0.1", "port": backend.server_address[1]}],
        "haproxy": {"port": port, "bind_address": "127.0.0.1"},
    }
    return Synapse({"web": service}, startup_wait=0)


def test_stop_on_exit_lets_requests_in_flight_finish_and_refuses_new_ones(backend) -> None:
    port = free_port()
    syn = synapse_for(backend, port).start()
    wait_serving(port, {"s"})
    answers, threads = in_flight(backend, port)
    syn.signal(signal.SIGTERM)
    # Refused well before the requests in flight end (SLOW): not held in a backlog.
    wait_until(lambda: refused(port), SLOW - 1.0, interval=0.05, what="a refused connection")
    assert syn.process.wait(15) == 0
    for thread in threads:
        thread.join(10)
    assert answers == ["HTTP/1.0 200 OK"] * CLIENTS
    assert "how=soft took_s=" in syn.log(200)  # (the master ended with the last of them)


def test_a_container_stop_soft_stops_haproxy_under_tini(backend) -> None:
    port = free_port()
    syn = synapse_for(backend, port)
    del syn.config["haproxy"]["managed"]["stop_on_exit"]  # the default: auto
    syn.write_config()
    user_ns = ["--map-root-user"] if os.geteuid() else []
    tini = shutil.which("tini")
    assert tini is not None, "tini is needed (scripts/install.sh installs it)"
    unshare = ["unshare", "--pid", "--fork", "--mount-proc", *user_ns, tini, "--"]
    syn.process = ManagedProcess(unshare + syn.process.args, syn.dir, "synapse", syn.process.env)
    syn.start()
    wait_serving(port, {"s"})
    answers, threads = in_flight(backend, port)
    unshare_pid = syn.process.pid
    children = Path(f"/proc/{unshare_pid}/task/{unshare_pid}/children").read_text().split()
    os.kill(int(children[0]), signal.SIGTERM)  # to tini, PID 1 of the namespace: docker stop
    assert syn.process.wait(15) == 0
    for thread in threads:
        thread.join(10)
    assert answers == ["HTTP/1.0 200 OK"] * CLIENTS
    assert "child of tini, PID 1 of its PID namespace" in syn.log(200)


def test_signals_sent_again_during_the_stop_do_not_cut_it_short(backend) -> None:
    """A supervisor or an operator signalling twice: before, the second SIGTERM killed synapse
    mid-stop (exit -15; with the stop not yet at HAProxy, a stop_on_exit HAProxy ran on,
    orphaned, holding the ports), and a SIGHUP then ended it the same way."""
    port = free_port()
    syn = synapse_for(backend, port).start()
    wait_serving(port, {"s"})
    answers, threads = in_flight(backend, port)
    syn.signal(signal.SIGTERM)
    wait_until(lambda: "event=stopping" in syn.log(200), 5, interval=0.02, what="the stop")
    for again in (signal.SIGTERM, signal.SIGHUP):  # (a third stop signal would end it)
        time.sleep(0.2)
        syn.signal(again)
    assert syn.process.wait(15) == 0
    for thread in threads:
        thread.join(10)
    assert answers == ["HTTP/1.0 200 OK"] * CLIENTS
    log = syn.log(400)
    assert "how=soft took_s=" in log and log.count("event=signal_while_stopping") == 2, log
