"""HTTP(S) check: GET ``uri``; any 2xx or 3xx is up, optionally with ``expect`` in the body.

Each probe opens a fresh connection and closes it after the answer, because "the service
accepts new connections" is what a health check has to prove. The request is one h11
exchange (``smartstack.http_exchange``), not aiohttp: its client cost every nerve ~10 MB
of RSS and ~0.27 s of start for one small request per interval. Like Airbnb's nerve,
certificates are not verified: the check talks to a local port, usually by IP address.
"""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
import zlib

from nerve.checks.base import BaseCheck, CheckFailed, Passed
from nerve.checks.resolve import open_stream
from smartstack.http_exchange import Exchange

MAX_BODY = 64 * 1024  # enough to find an `expect` marker; a health page is small
USER_AGENT = "nerve (smartstack)"
_unverified: ssl.SSLContext | None = None


class ServiceExchange(Exchange):
    peer = "the service"

    async def close(self) -> None:
        # Not waiting for the close: the verdict is in, and a TLS peer that never answers
        # our close_notify would hold the result back (the transport still closes).
        self.writer.close()


def unverified_context() -> ssl.SSLContext:
    """TLS without certificate or name checks (one per process: building one costs ~1 ms)."""
    global _unverified
    if _unverified is None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        _unverified = context
    return _unverified


def format_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def request_headers(
    host: str, port: int, default_port: int, headers: dict[str, str]
) -> list[tuple[str, str]]:
    """Host, Accept, User-Agent and Connection, each unless the config's headers set it."""
    authority = format_host(host) if port == default_port else f"{format_host(host)}:{port}"
    given = {name.lower() for name in headers}
    ours = [("Host", authority), ("Accept", "*/*"), ("User-Agent", USER_AGENT)]
    head = [(name, value) for name, value in ours if name.lower() not in given]
    return [*head, *headers.items(), ("Connection", "close")]


def decoder(encoding: str) -> zlib._Decompress | None:
    """A decompressor for a gzip or deflate body (sent when the config's headers accept
    it); None for any other encoding, whose bytes are searched as they are."""
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return zlib.decompressobj(wbits=zlib.MAX_WBITS)
    return None


async def read_body(exchange: Exchange, encoding: str, limit: int) -> bytes:
    """Up to ``limit`` bytes of the (decoded) body."""
    unzip = decoder(encoding.strip().lower())
    body = bytearray()
    async for chunk in exchange.chunks():
        if unzip is not None:
            try:
                chunk = unzip.decompress(chunk, limit - len(body))
            except zlib.error as exc:
                raise CheckFailed(f"the body is not valid {encoding}: {exc}") from exc
        body += chunk
        if len(body) >= limit:
            break
    return bytes(body[:limit])


class HttpCheck(BaseCheck):
    type = "http"

    def __init__(
        self,
        name: str,
        host: str,
        port: int,
        uri: str,
        timeout: float,
        *,
        ssl: bool = False,
        headers: dict[str, str] | None = None,
        expect: str | None = None,
        open_timeout: float | None = None,
    ) -> None:
        super().__init__(name, timeout)
        scheme = "https" if ssl else "http"
        self.host, self.port, self.tls = host.strip("[]"), port, ssl
        self.path = uri if uri.startswith("/") else f"/{uri}"
        self.url = f"{scheme}://{format_host(host)}:{port}{self.path}"
        self.head = request_headers(host, port, 443 if ssl else 80, dict(headers or {}))
        self.expect = expect
        # The whole probe is cut by BaseCheck (which blames a stalled nerve less than a
        # slow service); a connect alone is cut by a shorter open_timeout.
        shorter = open_timeout is not None and open_timeout < timeout
        self.open_timeout = open_timeout if shorter else None

    async def _connect(self) -> Exchange:
        context = unverified_context() if self.tls else None
        sni = None if is_ip(self.host) else self.host  # no SNI for an address
        # Through the checks' resolver (never the loop's default pool); TLS still names
        # the host (SNI), and the Host header is the name too.
        opening = self._open(context, sni)
        where = f"{format_host(self.host)}:{self.port}"
        try:
            if self.open_timeout is None:
                return await opening
            return await asyncio.wait_for(opening, self.open_timeout)
        except TimeoutError as exc:
            raise CheckFailed(f"connect to {where} timed out after {self.open_timeout:g}s") from exc
        except OSError as exc:  # refused, unreachable, a TLS handshake refused
            raise CheckFailed(f"Cannot connect to {where}: {exc}") from exc

    async def _open(self, context: ssl.SSLContext | None, sni: str | None) -> Exchange:
        reader, writer = await open_stream(self.host, self.port, context, sni)
        return ServiceExchange(reader, writer)

    async def probe(self) -> Passed:
        exchange = await self._connect()
        try:
            response = await exchange.request("GET", self.path, self.head)
            status = response.status_code
            if not 200 <= status < 400:
                raise CheckFailed(f"HTTP {status} from {self.url}")
            if self.expect is None:
                return Passed(f"HTTP {status}")
            encoding = dict(response.headers).get(b"content-encoding", b"").decode("latin-1")
            body = await read_body(exchange, encoding, MAX_BODY)
            if self.expect.encode() not in body:
                raise CheckFailed(f"HTTP {status} but the body lacks {self.expect!r}")
            return Passed(f"HTTP {status}, body has {self.expect!r}")
        finally:
            await exchange.close()
