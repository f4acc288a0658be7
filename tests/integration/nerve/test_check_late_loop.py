"""Checks against real loopback services while nerve's own loop runs late (a CPU quota):
the verdict follows what the service did, read from the probe's socket, not how late the
loop was. The services run on threads of their own, so they answer while the loop blocks."""

from __future__ import annotations

import asyncio
import contextlib
import socketserver
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from late_loop import HANG_BOUND_S, ThreadedHttpService, lag_loop, serving

from nerve.checks import base
from nerve.checks.base import CheckResult
from nerve.checks.http import HttpCheck
from nerve.checks.rabbitmq import RabbitMqCheck
from nerve.checks.redis import RedisCheck
from nerve.checks.tcp import TcpCheck
from smartstack.http_exchange import Exchange

BOUND_S = 30.0  # no test waits longer for a round, however loaded the machine
ATTEMPTS = 5  # rounds of the on-time test, for one whose loop kept time


class _Accepting(socketserver.BaseRequestHandler):
    def handle(self) -> None:  # accepted: what a TCP check asks for
        pass


@pytest.fixture
def http_port() -> Iterator[int]:
    with serving(ThreadedHttpService(answer_s=0.0)) as port:
        yield port


@pytest.fixture
def slow_http_port() -> Iterator[int]:
    with serving(ThreadedHttpService(answer_s=0.3)) as port:
        yield port


@pytest.fixture
def hung_http_port() -> Iterator[int]:
    with serving(ThreadedHttpService(answer_s=None)) as port:
        yield port


@pytest.fixture
def tcp_port() -> Iterator[int]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Accepting)
    server.daemon_threads = True
    with serving(server) as port:
        yield port


class _Redis(socketserver.StreamRequestHandler):
    """+OK to AUTH, +PONG to PING after ``answer_s``; ``partial``: ``+PO`` then hang."""

    server: _Service

    def handle(self) -> None:
        while line := self.rfile.readline():
            if not line.startswith(b"*"):
                continue
            parts = [self.rfile.readline() and self.rfile.readline() for _ in range(int(line[1:]))]
            if self.server.partial:
                self.wfile.write(b"+PO")
                self.server.release.wait(HANG_BOUND_S)
                return
            time.sleep(self.server.answer_s)
            self.wfile.write(b"+PONG\r\n" if parts[0].strip().upper() == b"PING" else b"+OK\r\n")


START = bytes.fromhex("000a000a0009") + b"\x00" * 4 + b"\x00\x00\x00\x05PLAIN\x00\x00\x00\x05en_US"


class _Rabbit(socketserver.BaseRequestHandler):
    def handle(self) -> None:  # the AMQP header in, Connection.Start out
        self.request.recv(8)
        self.request.sendall(struct.pack(">BHI", 1, 0, len(START)) + START + b"\xce")
        time.sleep(0.2)


class _Service(socketserver.ThreadingTCPServer):
    daemon_threads = True
    request_queue_size = 256  # 80 connects at once: a backlog of 5 drops SYNs (1 s retries)

    def __init__(self, handler: type, answer_s: float = 0.0, partial: bool = False) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        self.answer_s, self.partial = answer_s, partial
        self.release = threading.Event()


@contextlib.contextmanager
def _service(handler: type, **kwargs: Any) -> Iterator[int]:
    server = _Service(handler, **kwargs)
    try:
        with serving(server) as port:
            yield port
    finally:
        server.release.set()


def failures(results: list[CheckResult]) -> list[str]:
    return [r.detail for r in results if r.verdict and not r.ok]


async def test_healthy_services_never_fail_while_the_loop_stays_late(
    monkeypatch: pytest.MonkeyPatch, http_port: int, tcp_port: int
) -> None:
    """Every turn of the loop blocks 0.5 s for 4 s, four times MAX_BLIND_S (here 1 s, the
    scale of the test): the answers are in but read late. Before, starved rounds gave no
    verdict for MAX_BLIND_S, then failed (a throttled nerve withdrew healthy services)."""
    monkeypatch.setattr(base, "MAX_BLIND_S", 1.0)
    checks = [
        HttpCheck("h", "127.0.0.1", http_port, "/", timeout=0.2),
        TcpCheck("t", "127.0.0.1", tcp_port, timeout=0.2),
    ]
    loop = asyncio.get_running_loop()
    lag_loop(0.5, 4.0)
    end = loop.time() + 4.0
    results: list[CheckResult] = []
    while loop.time() < end:  # rounds all through the lag
        results += await asyncio.wait_for(asyncio.gather(*(c.run() for c in checks)), BOUND_S)
    after = await asyncio.wait_for(asyncio.gather(*(c.run() for c in checks)), BOUND_S)
    assert failures(results) == []
    assert all(r.ok for r in after), [r.detail for r in after]


async def test_a_hung_service_fails_at_its_first_round_behind_a_late_loop(
    hung_http_port: int,
) -> None:
    """It read the request and never answers; every turn of the loop blocks 0.5 s. The
    round fails once the service has had its timeout since the request went out. Before,
    such rounds gave no verdict (MAX_BLIND_S, 10 s, of them) and the service stayed in."""
    check = HttpCheck("h", "127.0.0.1", hung_http_port, "/", timeout=0.3)
    lag_loop(0.5, 3.0)
    result = await asyncio.wait_for(check.run(), BOUND_S)
    assert result.verdict and not result.ok, result.detail
    assert result.detail == "timed out after 0.3s"


class _LateBeforeTheRequest(HttpCheck):
    """nerve's loop stops 1.5 s between the connect and the request (a CPU quota)."""

    async def _open(self, *args: object) -> Exchange:
        exchange = await super()._open(*args)  # type: ignore[arg-type]
        time.sleep(1.5)
        return exchange


async def test_a_loop_late_before_the_request_does_not_shorten_the_services_time(
    slow_http_port: int,
) -> None:
    """The service answers 0.3 s after the request, within its 1 s timeout; the loop's
    1.5 s stop came before the request went out. Before, the timer (late) gave one grace
    that kept time and cut the probe 0.05 s after the request."""
    check = _LateBeforeTheRequest("h", "127.0.0.1", slow_http_port, "/", timeout=1.0)
    result = await asyncio.wait_for(check.run(), BOUND_S)
    assert result.ok, result.detail


async def test_healthy_redis_and_rabbitmq_never_fail_while_the_loop_stays_late() -> None:
    """40 Redis and 40 RabbitMQ checks in rounds while every loop turn blocks 0.3 s. Before,
    a probe that had read its +PONG or Connection.Start waited for its socket's close, and
    a late timer then found nothing unread since the request and cut it as a timeout."""
    with _service(_Redis) as redis_port, _service(_Rabbit) as rabbit_port:
        checks = [RedisCheck(f"r{i}", "127.0.0.1", redis_port, timeout=0.3) for i in range(40)]
        checks += [RabbitMqCheck(f"q{i}", "127.0.0.1", rabbit_port, 0.3) for i in range(40)]
        loop = asyncio.get_running_loop()
        lag_loop(0.3, 4.0)
        end = loop.time() + 4.0
        results: list[CheckResult] = []
        while loop.time() < end:
            results += await asyncio.wait_for(asyncio.gather(*(c.run() for c in checks)), BOUND_S)
    assert failures(results) == []


async def test_a_redis_that_sent_part_of_its_answer_and_hangs_fails_behind_a_late_loop() -> None:
    """It answers PING with ``+PO`` and hangs; every turn of the loop blocks 0.3 s. The
    round fails at the service's timeout: the bytes were read and looked at. Before, they
    sat in the reader's buffer, counted as "answered" for good: no verdict every round
    (UNREAD, which did not count towards MAX_BLIND_S) for as long as the loop stayed late."""
    with _service(_Redis, partial=True) as port:
        check = RedisCheck("r", "127.0.0.1", port, timeout=0.3)
        lag_loop(0.3, 20.0)
        result = await asyncio.wait_for(check.run(), BOUND_S)
    assert result.verdict and not result.ok, result.detail
    assert result.detail == "timed out after 0.3s"
    assert result.latency < 5.0  # the loop still late: not the end of the lag that cut it


async def test_a_loop_on_time_cuts_the_whole_check_at_its_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Redis answers AUTH and PING 0.6 s each, within a 1 s timeout each but not in all;
    nerve's loop keeps time. Before, the timeout restarted at the PING: it passed at 1.2 s
    (docs: the whole check is cut at ``timeout``). A deadline timer that fired late (a
    busy machine: CI's side-by-side halves) gives the service its timeout from the PING,
    by design: such a round is run again, up to ``ATTEMPTS`` times, until one kept time."""
    lateness: list[float] = []

    def timed(now: float, due: float, *args: Any) -> tuple[base.Step, float]:
        lateness.append(now - due)
        return decide(now, due, *args)

    decide = base.decide
    monkeypatch.setattr(base, "decide", timed)
    on_time: list[CheckResult] = []
    with _service(_Redis, answer_s=0.6) as port:
        check = RedisCheck("r", "127.0.0.1", port, timeout=1.0, password="pw")
        for _ in range(ATTEMPTS):
            lateness.clear()
            result = await asyncio.wait_for(check.run(), BOUND_S)
            if lateness and max(lateness) <= base.LATE_SLACK:
                on_time.append(result)
                break
    assert on_time, f"the loop ran late in all {ATTEMPTS} rounds (last: {lateness})"
    assert on_time[0].verdict and not on_time[0].ok, on_time[0].detail
    assert on_time[0].detail == "timed out after 1s"
