"""smartstack/httpserver.py without a socket: parsing, routing, answers (the served side
is tested through the daemons' admin APIs in tests/integration)."""

from __future__ import annotations

import asyncio

import pytest

from smartstack import httpserver as web


def _reader(data: bytes) -> asyncio.StreamReader:
    reader = asyncio.StreamReader(limit=web.MAX_HEAD)
    reader.feed_data(data)
    reader.feed_eof()
    return reader


async def test_a_request_is_parsed_with_query_headers_and_body() -> None:
    raw = (
        b"POST /zones/a%20b/evacuate?service=web&service=db&x= HTTP/1.1\r\n"
        b"Host: x\r\nContent-Type: application/json; charset=utf-8\r\n"
        b'Content-Length: 11\r\n\r\n{"a": [1]}\nGET'
    )
    request = await web.read_request(_reader(raw), "127.0.0.1")
    assert request is not None
    assert (request.method, request.path, request.remote) == (
        "POST",
        "/zones/a b/evacuate",
        "127.0.0.1",
    )
    assert request.query == {"service": "web", "x": ""}  # the first of repeated keys
    assert request.headers.get("content-TYPE") == "application/json; charset=utf-8"
    assert request.content_type == "application/json"
    assert await request.json() == {"a": [1]}
    assert web.keep_alive(request)


async def test_a_closed_connection_is_none_and_bad_requests_are_refused() -> None:
    assert await web.read_request(_reader(b""), None) is None
    cases = [
        (b"GET /\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 411),
        (f"POST / HTTP/1.1\r\nContent-Length: {web.MAX_BODY + 1}\r\n\r\n".encode(), 413),
        (b"GET / HTTP/1.1\r\n" + b"X: " + b"y" * web.MAX_HEAD + b"\r\n\r\n", 413),
        (b"GET / HTTP/1.1\r\nHost", 400),
    ]
    for raw, status in cases:
        with pytest.raises(web.HTTPException) as refused:
            await web.read_request(_reader(raw), None)
        assert refused.value.status == status, raw[:40]


def test_routes_match_segments_and_refuse_other_methods() -> None:
    async def handler(_: web.Request) -> web.Response:
        return web.Response()

    router = web.Router()
    router.add("GET", "/health/{service}", handler)
    router.add("POST", "/zones/{zone}/evacuate", handler)
    request = web.Request("HEAD", "/health/web", web.Headers())
    assert router.resolve(request) is handler and request.match_info == {"service": "web"}
    escaped = web.Request("GET", "/health/a%2Fb", web.Headers())
    assert router.resolve(escaped) is handler and escaped.match_info == {"service": "a/b"}
    for method, path, error in [
        ("GET", "/health/", web.HTTPNotFound),
        ("GET", "/health/web/x", web.HTTPNotFound),
        ("GET", "/zones/az1/evacuate", web.HTTPMethodNotAllowed),
    ]:
        with pytest.raises(error) as refused:
            router.resolve(web.Request(method, path, web.Headers()))
        if error is web.HTTPMethodNotAllowed:
            assert refused.value.headers["Allow"] == "POST"


def test_probe_routes_are_told_apart_from_the_others() -> None:
    async def handler(_: web.Request) -> web.Response:
        return web.Response()

    router = web.Router()
    router.add("GET", "/health", handler, probe=True)
    router.add("GET", "/health/{service}", handler, probe=True)
    router.add("GET", "/status", handler)
    router.add("POST", "/health/{service}", handler)

    def probe(method: str, path: str) -> bool:
        return router.is_probe(web.Request(method, path, web.Headers()))

    assert probe("GET", "/health") and probe("HEAD", "/health/web")
    assert not probe("GET", "/status") and not probe("POST", "/health/web")
    assert not probe("GET", "/nothing") and not probe("DELETE", "/health")


async def test_a_request_whose_first_byte_was_read_already_is_parsed_whole() -> None:
    request = await web.read_request(_reader(b"ET /health HTTP/1.1\r\n\r\n"), None, b"G")
    assert request is not None and (request.method, request.path) == ("GET", "/health")
    with pytest.raises(web.HTTPBadRequest):
        await web.read_request(_reader(b""), None, b"G")  # closed after one byte


def test_answers_carry_length_type_and_connection() -> None:
    answer = web.Response(status=503, text="down\n", headers={"X-A": "1"})
    assert answer.encode(keep_alive=False) == (
        b"HTTP/1.1 503 Service Unavailable\r\nX-A: 1\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Length: 5\r\n"
        b"Connection: close\r\n\r\ndown\n"
    )
    head = web.Response(body=b"{}", content_type="application/json").encode(head_only=True)
    assert head.endswith(b"Content-Length: 2\r\nConnection: keep-alive\r\n\r\n")
    assert web.HTTPConflict(text="no\n").status == 409
    http10 = web.Request("GET", "/", web.Headers(), version="HTTP/1.0")
    assert not web.keep_alive(http10)


async def test_a_body_nested_past_the_parser_s_depth_is_not_json() -> None:
    """Request.json's contract is ValueError for a body that is not JSON a handler can use:
    nesting past the parser's recursion limit was a RecursionError (a 500 and a traceback)."""
    for body in (b"[" * 100_000, b'{"a":' * 50_000, b"[" * 20_000 + b"]" * 20_000):
        request = web.Request("POST", "/", web.Headers(), body)
        with pytest.raises(ValueError, match="nested"):
            await request.json()
