"""smartstack/httpserver.py on a real loopback socket: the limits a hand-written server
needs against clients that hold connections (too many at once, dripping their request,
or never reading), and health probes answered meanwhile (docs/health.md)."""

from __future__ import annotations

import asyncio
import time

import pytest
from prometheus_client import CollectorRegistry

from smartstack import httpserver as web
from smartstack.admin import AdminServer

Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def _server(body: bytes = b"ok\n", host: str = "127.0.0.1") -> web.HTTPServer:
    router = web.Router()

    async def answer(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="text/plain")

    router.add("GET", "/x", answer)
    router.add("GET", "/health", answer, probe=True)
    server = web.HTTPServer(router, host, 0)
    await server.start()
    return server


async def _get(port: int, path: str = "/x") -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nConnection: close\r\n\r\n".encode())
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return answer


async def _open(port: int, count: int, send: bytes = b"") -> list[Conn]:
    held = []
    for _ in range(count):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(send)
        held.append((reader, writer))
    await asyncio.sleep(0.2)  # the server has taken them
    return held


async def test_at_the_cap_idle_ones_make_room_and_busy_ones_leave_probes_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(web, "MAX_CONNECTIONS", 3)
    server = await _server()
    idle = await _open(server.port, 3)
    await asyncio.sleep(web.PROBE_TIMEOUT)  # idle long enough to be closed for a new one
    dripping: list[Conn] = []
    try:
        assert (await _get(server.port)).startswith(b"HTTP/1.1 200 ")  # an idle one closed
        assert await asyncio.wait_for(idle[0][0].read(), 2) == b""  # the oldest one
        dripping = await _open(server.port, 3, b"G")  # the other two idle ones go
        assert (await _get(server.port)).startswith(b"HTTP/1.1 503 ")
        assert (await _get(server.port, "/health")).startswith(b"HTTP/1.1 200 ")
        dripping[0][1].close()
        await asyncio.sleep(0.1)
        assert (await _get(server.port)).startswith(b"HTTP/1.1 200 ")
    finally:
        for _, writer in idle + dripping:
            writer.close()
        await server.stop()


async def test_a_burst_past_the_limit_is_answered_whole_none_reset_before_its_request_is_read() -> (
    None
):
    """100 clients connect and send at once: each new connection used to close one of the
    first 64 as idle before its request was read (ConnectionResetError, no answer)."""
    server = await _server()

    async def status(path: str) -> bytes:
        try:
            return (await _get(server.port, path)).split(b" ", 2)[1]
        except ConnectionError as err:
            return type(err).__name__.encode()

    try:
        probes = await asyncio.gather(*[status("/health") for _ in range(100)])
        assert probes == [b"200"] * 100
        others = await asyncio.gather(*[status("/x") for _ in range(100)])
        assert set(others) <= {b"200", b"503"} and others.count(b"200") >= 64, others
    finally:
        await server.stop()


async def test_a_request_dripped_byte_by_byte_is_dropped_after_the_request_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(web, "REQUEST_TIMEOUT", 0.5)
    server = await _server()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    closed_after = None
    try:
        started = time.monotonic()
        for byte in b"GET /x HTTP/1.1\r\nX-Slow: " + b"y" * 50:  # ~6 s at one byte / 0.1 s
            writer.write(bytes([byte]))
            try:
                if await asyncio.wait_for(reader.read(1), 0.1) == b"":
                    closed_after = time.monotonic() - started
                    break
            except TimeoutError:
                continue  # still open: the next byte
            except ConnectionResetError:  # closed while a byte was on its way
                closed_after = time.monotonic() - started
                break
        assert closed_after is not None and closed_after < 3.0
    finally:
        writer.close()
        await server.stop()


async def test_health_answers_within_a_second_while_idle_and_slowloris_clients_hold_the_port() -> (
    None
):
    """The review's case: 64+ idle connections and 100 dripping ones on the admin port."""
    admin = AdminServer("127.0.0.1", 0, CollectorRegistry(), dict)
    await admin.start()
    held: list[Conn] = []
    try:
        held += await _open(admin.port, 70)
        held += await _open(admin.port, 100, b"G")
        answers = []
        for _ in range(6):
            for _, writer in held:
                if not writer.is_closing():
                    writer.write(b"E")
            started = time.monotonic()
            answer = await _get(admin.port, "/health")
            answers.append((answer.split(b"\r\n")[0], time.monotonic() - started < 1.0))
            await asyncio.sleep(0.3)
        assert answers == [(b"HTTP/1.1 200 OK", True)] * 6
        assert (await _get(admin.port, "/status")).startswith(b"HTTP/1.1 503 ")
    finally:
        for _, writer in held:
            writer.close()
        await admin.stop()


async def test_a_client_that_never_reads_is_dropped_after_the_write_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(web, "WRITE_TIMEOUT", 0.5)
    server = await _server(b"x" * 4_000_000)  # more than the socket buffers take
    _reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(b"GET /x HTTP/1.1\r\n\r\n" * 3)
        await asyncio.sleep(0.2)
        assert len(server._connections) == 1  # stuck handing the answer over
        await asyncio.sleep(1.0)
        assert not server._connections  # dropped, buffers freed
    finally:
        writer.close()
        await server.stop()


async def test_a_server_on_every_address_takes_ipv4_too() -> None:
    """`admin.host: "::"`: asyncio made it IPv6-only, and `nerve maint -c` (which talks to
    127.0.0.1 for a server on every address) was refused: a deploy's drain step failed."""
    server = await _server(host="::")
    try:
        assert (await _get(server.port)).endswith(b"ok\n")
    finally:
        await server.stop()
