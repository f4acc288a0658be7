"""A check host whose DNS hangs: real listeners on 127.0.0.1, and a resolver we control
(``socket.getaddrinfo`` answers every name as usual, except ``hung.test``, which hangs
the way a blackholed DNS server does, until the test ends)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp import web

from nerve.checks import resolve
from nerve.checks.http import HttpCheck
from nerve.checks.rabbitmq import RabbitMqCheck
from nerve.checks.redis import RedisCheck
from nerve.checks.tcp import TcpCheck
from testbed.process import free_port

HUNG = "hung.test"
GONE = "gone.test"  # no such name: answered at once
ROOT = Path(__file__).resolve().parents[3]


class Dns:
    """``socket.getaddrinfo`` with a name that never answers; counts the lookups."""

    def __init__(self) -> None:
        self.real = socket.getaddrinfo
        self.release = threading.Event()
        self.lookups: list[str] = []

    def getaddrinfo(self, host, port, *args, **kwargs):  # type: ignore[no-untyped-def]
        if kwargs.get("flags", 0) & socket.AI_NUMERICHOST:  # never asks DNS
            return self.real(host, port, *args, **kwargs)
        self.lookups.append(host)
        if host == HUNG:
            self.release.wait(60)
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        if host == GONE:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return self.real(host, port, *args, **kwargs)


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> Iterator[Dns]:
    fake = Dns()
    monkeypatch.setattr(socket, "getaddrinfo", fake.getaddrinfo)
    monkeypatch.setattr(resolve, "RESOLVER", resolve.Resolver())  # nothing cached yet
    yield fake
    fake.release.set()


@pytest.fixture
async def web_port() -> AsyncIterator[int]:
    async def ok(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/ok", ok)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield port
    await runner.cleanup()


async def test_a_hung_name_never_starves_another_checks_lookup(dns: Dns, web_port: int) -> None:
    # Two threads in the loop's default pool: the hung lookups of the old code filled
    # them in two rounds, then every lookup of "localhost" timed out.
    asyncio.get_running_loop().set_default_executor(concurrent.futures.ThreadPoolExecutor(2))
    hung = [
        TcpCheck("t", HUNG, 5432, 0.05),
        RedisCheck("r", HUNG, 5432, 0.05),
        RabbitMqCheck("a", HUNG, 5432, 0.05),
        HttpCheck("h", HUNG, 5432, "/ok", 0.05),
    ]
    healthy = [
        TcpCheck("t", "localhost", web_port, 0.5),
        HttpCheck("h", "localhost", web_port, "/ok", 0.5),
    ]
    for _ in range(6):
        failed = await asyncio.gather(*(check.run() for check in hung))
        assert [r.detail for r in failed] == ["timed out after 0.05s"] * 4
        passed = await asyncio.gather(*(check.run() for check in healthy))
        assert [(r.ok, r.detail) for r in passed] == [
            (True, f"connected to localhost:{web_port}"),
            (True, "HTTP 200"),
        ]
    # One lookup of the hung name in flight for all rounds and check types, and the
    # healthy name's answer reused (cached) rather than looked up every round.
    assert dns.lookups.count(HUNG) == 1
    assert dns.lookups.count("localhost") == 1
    assert resolve.RESOLVER.in_flight() == 1


async def test_the_answer_of_a_lookup_that_outlived_its_round_serves_the_next(
    dns: Dns, web_port: int
) -> None:
    slow = threading.Event()

    def late(host, port, *args, **kwargs):  # type: ignore[no-untyped-def]
        if kwargs.get("flags", 0) & socket.AI_NUMERICHOST:
            return dns.real(host, port, *args, **kwargs)
        dns.lookups.append(host)
        slow.wait(5)
        return dns.real("127.0.0.1", port, *args, **kwargs)

    socket.getaddrinfo = late  # restored by the fixture's monkeypatch
    check = TcpCheck("t", "slow.test", web_port, 0.05)
    assert (await check.run()).detail == "timed out after 0.05s"
    slow.set()
    for _ in range(50):
        if resolve.RESOLVER.in_flight() == 0:
            break
        await asyncio.sleep(0.01)
    result = await check.run()
    assert result.ok and dns.lookups == ["slow.test"]


async def test_unresolvable_and_refused_are_still_reported(dns: Dns) -> None:
    refused = await TcpCheck("t", "127.0.0.1", free_port(), 1).run()
    assert not refused.ok and "Connect call failed" in refused.detail
    for _ in range(2):  # a failed lookup is not cached: asked again the next round
        unknown = await TcpCheck("t", GONE, 80, 2).run()
        assert unknown.detail == "gaierror: [Errno -2] Name or service not known"
    assert dns.lookups == [GONE, GONE]


EXIT = """
import asyncio, socket, sys, threading, time
sys.path.insert(0, {root!r})
real = socket.getaddrinfo
def hang(host, *args, **kwargs):
    if host == "hung.test" and not kwargs.get("flags", 0) & socket.AI_NUMERICHOST:
        threading.Event().wait(30)
    return real(host, *args, **kwargs)
socket.getaddrinfo = hang
from nerve.checks.tcp import TcpCheck
print("imported", time.monotonic(), flush=True)
async def main():
    for _ in range(3):
        print((await TcpCheck("t", "hung.test", 5432, 0.05).run()).detail, flush=True)
asyncio.run(main())
print("done", time.monotonic(), flush=True)
"""


def test_a_hung_lookup_does_not_hold_the_exit(tmp_path: Path) -> None:
    script = tmp_path / "exit.py"
    script.write_text(EXIT.format(root=str(ROOT)))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    ended = time.monotonic()  # (CLOCK_MONOTONIC: the same clock in both processes)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[1:4] == ["timed out after 0.05s"] * 3
    # From the imports' end: the interpreter's start and imports took up to 9 s at load 9.
    took = ended - float(lines[0].split()[1])
    assert took < 5, f"exit took {took:.1f}s"  # the old code waited for the 30 s lookup
