"""The reliability suite's report: Figures -> Result -> JSON -> RELIABILITY.md, and the
paced client's counting (each attempt once, failures timed)."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import threading
import time
from pathlib import Path

from bench.backend import READY_SLOW_S, SLOW_S
from bench.faults import Figures, summary, to_result, write_report
from bench.paced import PacedClient
from bench.report import Target, write_json
from bench.stack import Backend, Workspace
from testbed.process import free_port


def figures() -> list[Figures]:
    return [
        Figures("etcd leader kill -9", 0, 812, recover_s=0.48, recover_what="new leader",
                registrations="2/2", reloads=0),
        Figures("HAProxy kill -9", 495, 801, {"refused": 495}, failing_s=2.56, recover_s=2.65,
                recover_what="answers", registrations="2/2", reloads=1, expect_zero=False),
    ]  # fmt: skip


def test_targets_only_where_zero_is_already_expected() -> None:
    result = to_result(figures(), quick=True, failures=[])
    rows = {s.title: {r.label: r for r in s.rows} for s in result.sections}
    assert rows["etcd leader kill -9"]["failed requests"].target == Target("==", 0)
    assert rows["HAProxy kill -9"]["failed requests"].target is None
    assert rows["HAProxy kill -9"]["requests failing for"].value == 2.56
    assert result.missed() == []


def test_a_scenarios_own_figures_are_rows_of_its_section() -> None:
    panic = Figures("slow /ready", 0, 900, registrations="2/2", reloads=0)
    panic.extra = {"synapse panics": (2, ""), "slowest answered request": (0.004, "s")}
    result = to_result([*figures(), panic], quick=False, failures=[])
    rows = {s.title: {r.label: r for r in s.rows} for s in result.sections}
    assert rows["slow /ready"]["synapse panics"].value == 2
    assert rows["slow /ready"]["slowest answered request"].unit == "s"
    assert "synapse panics" not in rows["etcd leader kill -9"]


def test_report_says_its_mode_and_lists_every_scenario(tmp_path: Path) -> None:
    path = write_json(to_result(figures(), quick=True, failures=[]), True, tmp_path)
    report = tmp_path / "RELIABILITY.md"
    write_report(report, json.loads(path.read_text()), figures())
    text = report.read_text()
    assert "Mode of this run: **QUICK" in text
    assert (
        "| HAProxy kill -9 | 495 / 801 (not yet 0) | 2.56 s | 2.65 s (answers) | 2/2 | 1 |" in text
    )
    assert "| etcd leader kill -9 | 0 / 812 | 0 s |" in summary(figures())
    assert "**HAProxy kill -9**" in text  # the detailed sections, from bench.markdown


def test_paced_client_counts_refused_attempts_once() -> None:
    client = PacedClient(free_port(), threads=2, interval_s=0.05, max_duration_s=0.5).start()
    time.sleep(0.6)  # past its own bound: the threads have stopped by themselves
    result = client.finish()
    assert 2 <= result.attempts <= 2 * (0.6 / 0.05 + 2)  # paced, not a tight loop
    assert result.failed == result.attempts == result.errors["refused"]
    assert 0 < result.outage_s < 0.7


def _counting_server() -> tuple[socket.socket, list[int]]:
    """An HTTP/1.1 keep-alive server on loopback that counts the connections it accepted."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted = [0]

    def serve(conn: socket.socket) -> None:
        with conn:
            buffer = b""
            while data := conn.recv(4096):
                buffer += data
                while b"\r\n\r\n" in buffer:
                    request, buffer = buffer.split(b"\r\n\r\n", 1)
                    close = b"connection: close" in request.lower()
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    if close:
                        return

    def accept() -> None:
        with contextlib.suppress(OSError):  # the listener closed: the test is over
            while True:
                conn, _ = listener.accept()
                accepted[0] += 1
                threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return listener, accepted


def test_paced_keep_alive_client_sends_on_one_connection() -> None:
    for keep_alive in (True, False):
        listener, accepted = _counting_server()
        with listener:
            port = listener.getsockname()[1]
            client = PacedClient(port, threads=1, interval_s=0.01, keep_alive=keep_alive).start()
            time.sleep(0.3)
            result = client.finish()
        assert result.attempts >= 5 and result.failed == 0
        assert accepted[0] == (1 if keep_alive else result.attempts)


def test_backend_answers_slow_requests_late_on_a_kept_connection() -> None:
    with Workspace() as ws:
        backend = Backend(ws, "slow").start()
        conn = http.client.HTTPConnection("127.0.0.1", backend.port, timeout=SLOW_S + 3)
        took = []
        for path in ("/slow", "/slow", "/"):
            began = time.perf_counter()
            conn.request("GET", path)
            response = conn.getresponse()
            assert response.status == 200 and response.read() == b"slow\n"
            took.append(time.perf_counter() - began)
        conn.close()
    assert min(took[:2]) >= SLOW_S and took[2] < SLOW_S / 2


def test_backend_ready_is_slow_between_sigusr1_and_sigusr2_and_the_client_times_it() -> None:
    """bench.faults' checks-all-timeout: /ready (HAProxy's check) slow, / and /health not."""
    with Workspace() as ws:
        backend = Backend(ws, "ready").start()
        assert backend.proc is not None

        def took(path: str) -> float:
            conn = http.client.HTTPConnection("127.0.0.1", backend.port, timeout=READY_SLOW_S + 3)
            began = time.perf_counter()
            conn.request("GET", path)
            assert conn.getresponse().status == 200
            conn.close()
            return time.perf_counter() - began

        fast = took("/ready")
        os.kill(backend.proc.pid, signal.SIGUSR1)
        time.sleep(0.2)
        client = PacedClient(backend.port, threads=1, timeout_s=READY_SLOW_S + 3, path="/ready",
                             max_duration_s=0.5).start()  # fmt: skip
        others = [took("/health"), took("/")]
        result = client.finish()
        os.kill(backend.proc.pid, signal.SIGUSR2)
        time.sleep(0.2)
        again = took("/ready")
        assert backend.proc.alive  # the signals are handled, not fatal
    assert fast < READY_SLOW_S / 3 and again < READY_SLOW_S / 3
    assert max(others) < READY_SLOW_S / 3
    assert result.failed == 0 and result.slowest_s >= READY_SLOW_S
