"""Each check type against real listeners on 127.0.0.1 (HTTP/HTTPS servers, TCP ports,
commands, small Redis and AMQP speakers), and the timeout that cuts every check."""

from __future__ import annotations

import asyncio
import ssl
import struct
import subprocess
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web
from late_loop import ThreadedHttpService, serving

from nerve.checks.exec import MAX_OUTPUT, ExecCheck
from nerve.checks.http import HttpCheck
from nerve.checks.rabbitmq import RabbitMqCheck
from nerve.checks.redis import RedisCheck
from nerve.checks.tcp import TcpCheck
from testbed.process import free_port, process_gone, wait_until

# --------------------------------------------------------------------------- servers


async def hang(_: web.Request) -> web.Response:
    await asyncio.sleep(3600)
    return web.Response()


SEEN = web.AppKey("seen", list[str])


def respond(
    status: int, text: str = "", headers: dict[str, str] | None = None
) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(_: web.Request) -> web.Response:
        return web.Response(status=status, text=text, headers=headers)

    return handler


def http_app() -> web.Application:
    seen: list[str] = []

    async def headers(request: web.Request) -> web.Response:
        seen.append(request.headers.get("X-Check", ""))
        status = 200 if request.headers.get("X-Check") == "yes" else 403
        return web.Response(status=status, text="headers")

    async def streamed(request: web.Request) -> web.StreamResponse:
        # A status page written in two chunks: the marker is in the second one.
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b"<html>" + b"x" * 2000)
        await asyncio.sleep(0.05)
        await response.write(b"status: READY</html>")
        await response.write_eof()
        return response

    app = web.Application()
    app[SEEN] = seen
    app.router.add_get("/streamed", streamed)
    app.router.add_get("/ok", respond(200, "status: fine"))
    app.router.add_get("/redirect", respond(302, headers={"Location": "/x"}))
    app.router.add_get("/fail", respond(500, "broken"))
    app.router.add_get("/headers", headers)
    app.router.add_get("/hang", hang)
    return app


@pytest.fixture
async def http_server() -> AsyncIterator[tuple[int, web.Application]]:
    app = http_app()
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield port, app
    await runner.cleanup()


@pytest.fixture
async def https_port(tmp_path: Path) -> AsyncIterator[int]:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=service.example", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    runner = web.AppRunner(http_app(), shutdown_timeout=0.1)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=context).start()
    yield port
    await runner.cleanup()


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], object]


@pytest.fixture
async def tcp_server() -> AsyncIterator[Callable[[Handler], asyncio.Future[int]]]:
    servers: list[asyncio.Server] = []

    async def start(handler: Handler) -> int:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        servers.append(server)
        return server.sockets[0].getsockname()[1]

    yield start  # type: ignore[misc]
    for server in servers:
        server.close()


def closed_port() -> int:
    return free_port()  # nothing listens there


# --------------------------------------------------------------------------- http


async def test_http_2xx_and_3xx_are_up_others_down(http_server) -> None:
    port, _ = http_server

    def check(uri: str) -> HttpCheck:
        return HttpCheck("h", "127.0.0.1", port, uri, timeout=2)

    assert (await check("/ok").run()).ok
    result = await check("/redirect").run()
    assert result.ok and result.detail == "HTTP 302"
    failed = await check("/fail").run()
    assert not failed.ok and "HTTP 500" in failed.detail
    assert not (await check("/missing").run()).ok  # 404


async def test_http_expect_and_headers(http_server) -> None:
    port, app = http_server
    good = HttpCheck("h", "127.0.0.1", port, "/ok", 2, expect="fine")
    wrong = HttpCheck("h", "127.0.0.1", port, "/ok", 2, expect="ready")
    assert (await good.run()).ok
    result = await wrong.run()
    assert not result.ok and "'ready'" in result.detail
    with_header = HttpCheck("h", "127.0.0.1", port, "/headers", 2, headers={"X-Check": "yes"})
    assert (await with_header.run()).ok
    assert not (await HttpCheck("h", "127.0.0.1", port, "/headers", 2).run()).ok
    assert app[SEEN] == ["yes", ""]
    streamed = HttpCheck("h", "127.0.0.1", port, "/streamed", 2, expect="READY")
    assert (await streamed.run()).ok  # the whole body is searched, not its first chunk


async def test_https_check_does_not_verify_the_certificate(https_port) -> None:
    secure = HttpCheck("s", "127.0.0.1", https_port, "/ok", 5, ssl=True)
    plain = HttpCheck("p", "127.0.0.1", https_port, "/ok", 5)
    assert (await secure.run()).ok
    assert not (await plain.run()).ok


async def test_http_connection_refused_is_down() -> None:
    result = await HttpCheck("h", "127.0.0.1", closed_port(), "/", 2).run()
    assert not result.ok and "Cannot connect" in result.detail


async def test_a_check_that_never_answers_is_cut_by_its_timeout(http_server) -> None:
    port, _ = http_server
    check = HttpCheck("h", "127.0.0.1", port, "/hang", timeout=0.3)
    result = await asyncio.wait_for(check.run(), 10)
    assert not result.ok
    assert 0.25 <= result.latency < 5
    assert "timed out" in result.detail


async def test_an_answer_that_arrived_while_nerve_was_stalled_passes() -> None:
    """The service (its own thread) answers in 20 ms; nerve's loop stalls 200 ms just after
    the request (a CPU quota throttling the container): the answer waits unread past the
    100 ms timeout. It counts: the service was not slow, nerve was."""
    with serving(ThreadedHttpService(answer_s=0.02)) as port:
        check = HttpCheck("h", "127.0.0.1", port, "/", timeout=0.1)
        assert (await check.run()).ok  # (warm: the stall below hits the request, not a connect)
        asyncio.get_running_loop().call_later(0.005, time.sleep, 0.2)
        result = await asyncio.wait_for(check.run(), 10)
        assert result.ok, result.detail
        assert result.latency >= 0.2  # (the stall did hit it)


# --------------------------------------------------------------------------- tcp, noop


async def test_tcp_check(tcp_server) -> None:
    port = await tcp_server(lambda r, w: w.close())
    assert (await TcpCheck("t", "127.0.0.1", port, 2).run()).ok
    result = await TcpCheck("t", "127.0.0.1", closed_port(), 2).run()
    assert not result.ok and "ConnectionRefused" in result.detail


# --------------------------------------------------------------------------- exec


async def test_exec_exit_status_and_output_are_kept() -> None:
    up = await ExecCheck("e", "echo all good", 5).run()
    assert up.ok and up.output == "all good\n"
    down = await ExecCheck("e", ["sh", "-c", "echo disk full >&2; exit 3"], 5).run()
    assert not down.ok
    assert down.detail == "exit status 3: disk full"
    assert down.output == "disk full\n"


async def test_exec_keeps_only_the_tail_of_a_flood_of_output() -> None:
    # A chatty command must not make nerve hold everything it printed in memory.
    flood = "head -c 100000000 /dev/zero | tr '\\0' x; echo; echo the end"
    tracemalloc.start()
    try:
        result = await ExecCheck("e", flood, timeout=30).run()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.ok, result.detail
    assert result.output is not None and result.output.endswith("x\nthe end\n")
    assert len(result.output) == MAX_OUTPUT
    assert peak < 10_000_000, f"peak {peak} bytes"


async def test_exec_timeout_kills_the_command_and_its_children(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    command = f"sleep 60 & echo $! > {pidfile}; wait"
    result = await ExecCheck("e", command, timeout=0.5).run()
    assert not result.ok and "timed out" in result.detail
    child = int(pidfile.read_text())
    wait_until(lambda: process_gone(child), 10, what="the command's child to be killed")


# --------------------------------------------------------------------------- redis, rabbitmq


async def test_redis_ping_and_auth(tcp_server) -> None:
    async def redis(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        authed = False
        while line := await reader.readline():
            if not line.startswith(b"*"):
                continue
            parts = []
            for _ in range(int(line[1:])):
                await reader.readline()  # $len
                parts.append((await reader.readline()).strip())
            if parts[0] == b"AUTH":
                authed = parts[1] == b"secret"
                writer.write(b"+OK\r\n" if authed else b"-ERR invalid password\r\n")
            elif parts[0] == b"PING":
                writer.write(b"+PONG\r\n" if authed else b"-NOAUTH Authentication required.\r\n")
            await writer.drain()
        writer.close()

    port = await tcp_server(redis)
    assert (await RedisCheck("r", "127.0.0.1", port, 2, password="secret").run()).ok
    wrong = await RedisCheck("r", "127.0.0.1", port, 2, password="nope").run()
    assert not wrong.ok and "AUTH" in wrong.detail
    noauth = await RedisCheck("r", "127.0.0.1", port, 2).run()
    assert not noauth.ok and "NOAUTH" in noauth.detail


def amqp_connection_start() -> bytes:
    # class 10 method 10, version 0-9, empty server-properties table, mechanisms, locales.
    args = b"\x00\x09" + struct.pack(">I", 0) + struct.pack(">I", 5) + b"PLAIN"
    args += struct.pack(">I", 5) + b"en_US"
    payload = struct.pack(">HH", 10, 10) + args
    return struct.pack(">BHI", 1, 0, len(payload)) + payload + b"\xce"


async def test_rabbitmq_expects_connection_start(tcp_server) -> None:
    received: list[bytes] = []

    async def broker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await reader.readexactly(8))
        writer.write(amqp_connection_start())
        await writer.drain()
        await reader.read()  # until the check hangs up
        writer.close()

    async def not_amqp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(8)
        writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        await writer.drain()
        writer.close()

    good = await RabbitMqCheck("q", "127.0.0.1", await tcp_server(broker), 2).run()
    assert good.ok, good.detail
    assert received == [b"AMQP\x00\x00\x09\x01"]
    bad = await RabbitMqCheck("q", "127.0.0.1", await tcp_server(not_amqp), 2).run()
    assert not bad.ok


async def test_redis_that_never_answers_times_out(tcp_server) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    result = await RedisCheck("r", "127.0.0.1", await tcp_server(silent), 0.3).run()
    assert not result.ok and "timed out" in result.detail


# --------------------------------------------------------------------------- building
