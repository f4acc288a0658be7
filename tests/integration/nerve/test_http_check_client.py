"""The HTTP check's own client (smartstack.http_exchange over h11) against real listeners:
the request it sends, the bodies it reads, the connect it bounds, the sockets it gives back."""

from __future__ import annotations

import asyncio
import gzip
import os
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import NamedTuple

import pytest
from aiohttp import web

from nerve.checks.http import HttpCheck
from testbed.process import free_port
from testbed.tls import make_test_pki

PAGE = b"<html>" + b"x" * 5000 + b"status: READY</html>"


class Served(NamedTuple):
    port: int
    seen: list[dict[str, str]]
    tls_port: int


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Served]:
    """``/gzip``: the page gzipped when asked for; ``/page``: plain; each request's headers
    are kept. The same app serves TLS on ``tls_port``."""
    seen: list[dict[str, str]] = []

    async def page(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        if "gzip" in request.headers.get("Accept-Encoding", "") and request.path == "/gzip":
            return web.Response(body=gzip.compress(PAGE), headers={"Content-Encoding": "gzip"})
        return web.Response(body=PAGE)

    app = web.Application()
    app.router.add_get("/gzip", page)
    app.router.add_get("/page", page)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    pki = make_test_pki(tmp_path / "pki")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    tls_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", tls_port, ssl_context=context).start()
    yield Served(port, seen, tls_port)
    await runner.cleanup()


async def test_the_request_names_the_host_and_closes_and_config_headers_win(server) -> None:
    port, seen, _ = server
    assert (await HttpCheck("h", "127.0.0.1", port, "/page", 2).run()).ok
    asked = HttpCheck("h", "127.0.0.1", port, "page", 2, headers={"Host": "web.internal"})
    assert (await asked.run()).ok
    assert seen[0]["Host"] == f"127.0.0.1:{port}"
    assert seen[0]["Connection"] == "close"
    assert "Accept-Encoding" not in seen[0]  # (so a service sends its page as it is)
    assert seen[1]["Host"] == "web.internal"


async def test_a_gzipped_page_is_searched_decoded(server) -> None:
    port, seen, _ = server
    check = HttpCheck(
        "h", "127.0.0.1", port, "/gzip", 2, expect="READY", headers={"Accept-Encoding": "gzip"}
    )
    result = await check.run()
    assert result.ok, result.detail
    assert seen[-1]["Accept-Encoding"] == "gzip"
    missing = HttpCheck(
        "h", "127.0.0.1", port, "/gzip", 2, expect="ABSENT", headers={"Accept-Encoding": "gzip"}
    )
    assert not (await missing.run()).ok


async def test_an_http_1_0_page_read_until_close() -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nwarming... READY")
        await writer.drain()
        writer.close()

    listener = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        result = await HttpCheck("h", "127.0.0.1", port, "/", 2, expect="READY").run()
        assert result.ok, result.detail
    finally:
        listener.close()


async def test_a_connect_that_hangs_is_cut_by_open_timeout() -> None:
    """A listener whose accept queue is full drops new SYNs: the connect hangs."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(4):  # fill the queue (its length is backlog + 1)
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        await asyncio.sleep(0.1)
        check = HttpCheck("h", "127.0.0.1", port, "/", 5, open_timeout=0.3)
        result = await asyncio.wait_for(check.run(), 10)
        assert not result.ok
        assert result.detail == f"connect to 127.0.0.1:{port} timed out after 0.3s"
        assert result.latency < 3
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_probes_give_every_socket_back(server) -> None:
    port, tls_port = server.port, server.tls_port
    checks = [
        HttpCheck("h", "127.0.0.1", port, "/page", 2),  # (its body read and dropped)
        HttpCheck("h", "127.0.0.1", port, "/page", 2, expect="READY"),
        HttpCheck("s", "127.0.0.1", tls_port, "/page", 2, ssl=True),
        HttpCheck("s", "127.0.0.1", tls_port, "/page", 2, ssl=True, expect="READY"),
        HttpCheck("h", "127.0.0.1", free_port(), "/", 2),  # refused
    ]
    for check in checks[:-1]:
        result = await check.run()  # (warm: the server's and the loop's own descriptors)
        assert result.ok, result.detail
    await asyncio.sleep(0.1)
    before = open_descriptors()
    for _ in range(100):
        for check in checks:
            await check.run()
    await asyncio.sleep(0.2)
    assert open_descriptors() <= before + 2
