"""smartstack/httpserver.py on a real loopback socket: the limits a hand-written server
needs against clients that hold connections (too many at once, or never reading)."""

from __future__ import annotations

import asyncio

import pytest

from smartstack import httpserver as web


async def _server(body: bytes = b"ok\n") -> web.HTTPServer:
    router = web.Router()

    async def answer(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="text/plain")

    router.add("GET", "/x", answer)
    server = web.HTTPServer(router, "127.0.0.1", 0)
    await server.start()
    return server


async def _get(port: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /x HTTP/1.1\r\nConnection: close\r\n\r\n")
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return answer


async def test_connections_beyond_the_cap_get_503_and_the_others_keep_working(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(web, "MAX_CONNECTIONS", 3)
    server = await _server()
    held = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(3)]
    try:
        await asyncio.sleep(0.1)  # the server has taken the three
        assert (await _get(server.port)).startswith(b"HTTP/1.1 503 ")
        held[0][1].close()
        await asyncio.sleep(0.1)
        assert (await _get(server.port)).startswith(b"HTTP/1.1 200 ")
    finally:
        for _, writer in held:
            writer.close()
        await server.stop()


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
