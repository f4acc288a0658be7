"""A small HTTP/1.1 server on asyncio streams for the daemons' admin API.

Why not aiohttp's server: importing aiohttp costs every synapse ~11.6 MB of RSS and
~0.27 s of start (it builds TLS contexts, cookie and multipart machinery at import) to
answer a handful of local routes (/health, /status, /metrics, a few POSTs). This
module has what those routes use and nothing else: exact and ``{name}`` path
segments, a query string, a bounded request (headers ≤ 64 KiB, a Content-Length body
≤ 1 MiB, no chunked uploads), keep-alive, HEAD for every GET route, and health probes
answered while other clients hold every connection (``smartstack.http_slots``). The
names follow
aiohttp's (``Request.match_info``, ``Response(text=..., content_type=...)``,
``HTTPNotFound``) so handlers read the same. nerve still uses aiohttp's client for
its HTTP checks.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, unquote

from smartstack.http_slots import Slots
from smartstack.logs import event

log = logging.getLogger("smartstack.httpserver")

MAX_HEAD = 64 * 1024
MAX_BODY = 1024 * 1024
IDLE_TIMEOUT = 60.0  # a connection may wait this long for its (next) request; then closed
# From a request's first byte to its last (head and body): a client dripping its request
# (slowloris) holds a slot no longer than this; a real one sends it in one go.
REQUEST_TIMEOUT = 10.0
PROBE_TIMEOUT = 1.0  # over the limit, to send the request: a probe's is one packet
WRITE_TIMEOUT = 30.0  # to hand an answer over to a client that does not read: then dropped
MAX_CONNECTIONS = 64  # served at once (each holds buffers); beyond, see smartstack.http_slots
# Open at once, hard: fds and read buffers (≤ 2 x MAX_HEAD each: 32 MiB at worst) bounded.
MAX_OPEN = 256


class Headers(dict[str, str]):
    """Request headers, looked up case-insensitively (keys are stored lower-case)."""

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        return super().get(name.lower(), default)

    def __getitem__(self, name: str) -> str:
        return super().__getitem__(name.lower())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and super().__contains__(name.lower())


class Request:
    """One parsed request; ``match_info`` is filled from the route's ``{name}`` segments."""

    def __init__(
        self,
        method: str,
        target: str,
        headers: Headers,
        body: bytes = b"",
        remote: str | None = None,
        version: str = "HTTP/1.1",
    ) -> None:
        self.method = method
        self.version = version
        raw_path, _, query = target.partition("?")
        self.path = unquote(raw_path)
        self.segments = [unquote(part) for part in raw_path.split("/")]  # "%2F" stays inside
        self.query = dict(reversed(parse_qsl(query, keep_blank_values=True)))  # first wins
        self.headers = headers
        self.body = body
        self.remote = remote
        self.match_info: dict[str, str] = {}

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "").partition(";")[0].strip().lower()

    async def read(self) -> bytes:
        return self.body

    async def json(self) -> Any:
        """The body as JSON; ValueError when it is not."""
        try:
            return json.loads(self.body)
        except RecursionError:  # ~1,000 levels of [ or {: the parser's C stack, not a fault
            raise ValueError("JSON nested too deeply") from None


class Response:
    def __init__(
        self,
        *,
        status: int = 200,
        text: str | None = None,
        body: bytes | None = None,
        content_type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.status = status
        self.headers = dict(headers or {})
        if text is not None:
            body = text.encode()
            self.headers.setdefault(
                "Content-Type", f"{content_type or 'text/plain'}; charset=utf-8"
            )
        elif content_type is not None:
            self.headers.setdefault("Content-Type", content_type)
        self.body = body or b""

    def encode(self, head_only: bool = False, keep_alive: bool = True) -> bytes:
        reason = HTTPStatus(self.status).phrase if self.status in _STATUSES else ""
        lines = [f"HTTP/1.1 {self.status} {reason}"]
        lines += [f"{k}: {v}" for k, v in self.headers.items()]
        lines.append(f"Content-Length: {len(self.body)}")
        lines.append("Connection: keep-alive" if keep_alive else "Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        return head if head_only else head + self.body


_STATUSES = {s.value for s in HTTPStatus}


class HTTPException(Response, Exception):
    """Raised by a handler: the answer is this response."""

    status_code = 500

    def __init__(self, *, text: str | None = None, headers: dict[str, str] | None = None) -> None:
        Response.__init__(self, status=self.status_code, text=text, headers=headers)
        Exception.__init__(self, text or "")


def _error(code: int) -> type[HTTPException]:
    return type(f"HTTP{HTTPStatus(code).name.title().replace('_', '')}", (HTTPException,),
                {"status_code": code})  # fmt: skip


HTTPBadRequest = _error(400)
HTTPUnauthorized = _error(401)
HTTPNotFound = _error(404)
HTTPMethodNotAllowed = _error(405)
HTTPConflict = _error(409)
HTTPLengthRequired = _error(411)
HTTPRequestEntityTooLarge = _error(413)
HTTPUnsupportedMediaType = _error(415)
HTTPInternalServerError = _error(500)
HTTPServiceUnavailable = _error(503)

Handler = Callable[[Request], Awaitable[Response]]


class Router:
    """Routes by method and path; a segment ``{name}`` matches one non-empty segment."""

    def __init__(self) -> None:
        self._routes: list[tuple[str, tuple[str, ...], Handler, bool]] = []

    def add(self, method: str, pattern: str, handler: Handler, probe: bool = False) -> None:
        """``probe``: a cheap health check, answered even when every connection is taken."""
        self._routes.append((method.upper(), tuple(pattern.split("/")), handler, probe))

    def resolve(self, request: Request) -> Handler:
        """The handler (``request.match_info`` filled); HTTPNotFound / MethodNotAllowed."""
        return self._route(request)[0]

    def is_probe(self, request: Request) -> bool:
        """Whether ``request`` goes to a probe route."""
        try:
            return self._route(request)[1]
        except HTTPException:
            return False

    def _route(self, request: Request) -> tuple[Handler, bool]:
        segments = request.segments
        allowed = []
        for method, pattern, handler, probe in self._routes:
            found = _match(pattern, segments)
            if found is None:
                continue
            if method == request.method or (method == "GET" and request.method == "HEAD"):
                request.match_info = found
                return handler, probe
            allowed.append(method)
        if allowed:
            allow = {"Allow": ", ".join(sorted(set(allowed)))}
            raise HTTPMethodNotAllowed(text=f"{request.method} not allowed here\n", headers=allow)
        raise HTTPNotFound(text="404: Not Found\n")


def _match(pattern: tuple[str, ...], segments: list[str]) -> dict[str, str] | None:
    if len(pattern) != len(segments):
        return None
    found = {}
    for want, got in zip(pattern, segments, strict=True):
        if want.startswith("{") and want.endswith("}"):
            if not got:
                return None
            found[want[1:-1]] = got
        elif want != got:
            return None
    return found


async def read_request(
    reader: asyncio.StreamReader, remote: str | None, first: bytes = b""
) -> Request | None:
    """The next request on the connection (``first``: its first byte, read already); None
    when the client closed it between requests.

    HTTPException for a request that cannot be served (too large, chunked, malformed).
    """
    try:
        head = first + await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if (first + exc.partial).strip():
            raise HTTPBadRequest(text="incomplete request\n") from None
        return None
    except asyncio.LimitOverrunError:
        raise HTTPRequestEntityTooLarge(text="request head too large\n") from None
    request_line, *lines = head.decode("latin-1").split("\r\n")
    parts = request_line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise HTTPBadRequest(text="malformed request line\n")
    headers = Headers()
    for line in lines:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    if "Transfer-Encoding" in headers:
        raise HTTPLengthRequired(text="send the body with a Content-Length\n")
    try:
        length = int(headers.get("Content-Length", "0"))
    except ValueError:
        raise HTTPBadRequest(text="bad Content-Length\n") from None
    if not 0 <= length <= MAX_BODY:
        raise HTTPRequestEntityTooLarge(text=f"the body may have at most {MAX_BODY} bytes\n")
    body = await reader.readexactly(length) if length else b""
    return Request(parts[0].upper(), parts[1], headers, body, remote, parts[2])


def keep_alive(request: Request) -> bool:
    """HTTP/1.1 keeps the connection unless asked not to; 1.0 only when asked to."""
    connection = request.headers.get("Connection", "").lower()
    if request.version == "HTTP/1.0":
        return connection == "keep-alive"
    return connection != "close"


class HTTPServer:
    """Serves ``router`` on host:port; ``port`` is the bound one after ``start`` (0: any)."""

    def __init__(self, router: Router, host: str, port: int) -> None:
        self.router = router
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        # An idle connection is closed for a new one only after as long as a new one gets to
        # send its request: a burst's own connections are not closed before theirs is read.
        self._slots: Slots[asyncio.Task[None]] = Slots(
            MAX_CONNECTIONS, MAX_OPEN, grace=PROBE_TIMEOUT
        )

    async def start(self) -> None:
        if self.host == "::":  # every address of both families (asyncio sets IPV6_V6ONLY:
            # IPv4 clients were refused, `nerve maint -c` and health checks among them)
            sock = _dual_stack_listener(self.port)
            server = await asyncio.start_server(self._serve, sock=sock, limit=MAX_HEAD)
        else:
            server = await asyncio.start_server(self._serve, self.host, self.port, limit=MAX_HEAD)
        if not server.sockets:
            # asyncio skips an address whose socket() fails (out of file descriptors too):
            # a server on no socket is a failed start, not an IndexError.
            server.close()
            where = f"{self.host}:{self.port}"
            raise OSError(f"no socket could be created for {where} (out of file descriptors?)")
        self._server = server
        self.port = server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._connections):
                task.cancel()
            await asyncio.gather(*self._connections, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        peer = writer.get_extra_info("peername")
        remote = peer[0] if isinstance(peer, tuple) else None
        verdict, evicted = self._slots.admit(task)
        if evicted is not None:
            evicted.cancel()  # idle: closing it loses no request (clients retry on a new one)
        self._report()
        try:
            if verdict == "serve":
                await self._keep_serving(reader, writer, remote)
            elif verdict == "probe_only":
                await self._probe_only(reader, writer, remote)
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError, HTTPException):
            pass  # a client that went away, stalled or sent garbage while we were busy
        except asyncio.CancelledError:
            pass  # the server stops, or closes this idle one for a new connection
        finally:
            self._slots.release(task)
            self._connections.discard(task)
            writer.close()

    async def _keep_serving(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, remote: str | None
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        while True:
            self._slots.idle(task)
            async with asyncio.timeout(IDLE_TIMEOUT):
                first = await reader.read(1)
            self._slots.active(task)
            if not first:
                return
            async with asyncio.timeout(REQUEST_TIMEOUT):
                try:
                    request = await read_request(reader, remote, first)
                except HTTPException as refused:
                    writer.write(refused.encode(keep_alive=False))
                    return
            if request is None or not await self._respond(writer, request, keep_alive(request)):
                return

    async def _probe_only(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, remote: str | None
    ) -> None:
        """Over the limit: a health probe is answered, anything else gets 503 (cheaply)."""
        async with asyncio.timeout(PROBE_TIMEOUT):  # its request first: closing on unread
            request = await read_request(reader, remote)  # data would reset the connection
        if request is None:
            return
        if self.router.is_probe(request):
            await self._respond(writer, request, persist=False)
            return
        busy = HTTPServiceUnavailable(text="too many admin connections\n")
        writer.write(busy.encode(keep_alive=False))
        async with asyncio.timeout(WRITE_TIMEOUT):
            await writer.drain()

    async def _respond(self, writer: asyncio.StreamWriter, request: Request, persist: bool) -> bool:
        """Answers ``request``; whether the connection stays open for the next one."""
        response = await self._answer(request)
        writer.write(response.encode(request.method == "HEAD", persist))
        async with asyncio.timeout(WRITE_TIMEOUT):  # a client that does not read
            await writer.drain()
        return persist

    def _report(self) -> None:
        counts = self._slots.due_report()
        if counts is not None:
            event(log, "admin_connections_full", level=logging.WARNING, limit=MAX_CONNECTIONS,
                  ceiling=MAX_OPEN, open=self._slots.open(), **counts)  # fmt: skip

    async def _answer(self, request: Request) -> Response:
        try:
            return await self.router.resolve(request)(request)
        except HTTPException as answer:
            return answer
        except Exception:
            log.exception("admin handler for %s %s failed", request.method, request.path[:200])
            return HTTPInternalServerError(text="500: internal error\n")


def _dual_stack_listener(port: int) -> socket.socket:
    """A listening socket on `::` that takes IPv4 too (IPV6_V6ONLY off)."""
    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(("::", port))
        sock.listen(100)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock
