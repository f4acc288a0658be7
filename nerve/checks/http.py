"""HTTP(S) check: GET ``uri``; any 2xx or 3xx is up, optionally with ``expect`` in the body.

Each probe opens a fresh connection and closes it after the answer, because "the service
accepts new connections" is what a health check has to prove. The body is read (and
dropped, without ``expect``) to its end, its first MAX_BODY bytes or nearly the check's
timeout, whichever comes first: an answer that breaks off within that (a reset, a
Content-Length longer than what came, a bad chunk) fails, as it does for curl, HAProxy and
Airbnb's nerve, while a long or endless body passes on what was read. The request is one h11
exchange (``smartstack.http_exchange``), not aiohttp: its client cost every nerve ~10 MB
of RSS and ~0.27 s of start for one small request per interval. Like Airbnb's nerve,
certificates are not verified: the check talks to a local port, usually by IP address.
"""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
import zlib
from typing import NamedTuple

from nerve.checks.base import BaseCheck, CheckFailed, Passed, describe_error
from nerve.checks.resolve import open_stream
from smartstack.http_exchange import Exchange, HeadTooLarge

MAX_BODY = 64 * 1024  # enough to find an `expect` marker; a health page is small
# A head's size says nothing of health, and a long one that passed in one read but failed
# in two flapped. So more than h11's 16 KiB, as curl (100 KiB) and Ruby's Net::HTTP (no
# limit) take; HAProxy's ~15 KB applies to what it proxies, not to the page nerve reads.
MAX_HEAD = 64 * 1024
# The body is read until this share of the check's timeout: the check's own cut (a
# failure) must not come first for a body still coming.
BODY_SHARE = 0.9
USER_AGENT = "nerve (smartstack)"
_unverified: ssl.SSLContext | None = None


class ServiceExchange(Exchange):
    peer = "the service"
    max_head = MAX_HEAD

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


class Body(NamedTuple):
    data: bytes  # up to the limit, decoded; empty unless kept
    cut: str  # "" when read to its end, else why the reading stopped before it


async def read_body(
    exchange: Exchange,
    encoding: str,
    limit: int,
    until: float,
    keep: bool = True,
    until_close: bool = False,
) -> Body:
    """The body up to ``limit`` bytes (decoded; counted as sent when not ``keep``), read
    until loop time ``until``; an answer that breaks off before either is an error, but
    for a body read ``until_close``: a reset is its close (a server that closes without
    reading the request resets the connection; HAProxy's check takes it so too)."""
    unzip = decoder(encoding.strip().lower()) if keep else None
    body, size = bytearray(), 0
    # Twice: after a loop stall past ``until`` the timeout fires before the reads of what
    # came meanwhile (a whole body, an ``expect`` marker); the second pass reads only that.
    for deadline in (until, None):
        try:
            async with asyncio.timeout_at(
                asyncio.get_running_loop().time() if deadline is None else deadline
            ):
                async for chunk in exchange.chunks():
                    if unzip is not None:
                        try:
                            chunk = unzip.decompress(chunk, limit - len(body))
                        except zlib.error as exc:
                            raise CheckFailed(f"the body is not valid {encoding}: {exc}") from exc
                    size += len(chunk)
                    if keep:
                        body += chunk
                    if size >= limit:
                        return Body(bytes(body[:limit]), f"body read up to {limit // 1024} KiB")
            return Body(bytes(body), "")
        except TimeoutError:
            continue
        except ConnectionResetError:
            if not until_close:
                raise
            return Body(bytes(body), "ended by a reset")
    return Body(bytes(body), "body still coming at the timeout")


def framed(response: object) -> bool:
    """Whether the body's end is in its head (Content-Length, chunked): a body read until
    the close has none, so a reset after it cannot be told from its end."""
    headers = dict(getattr(response, "headers", []))
    return b"content-length" in headers or b"transfer-encoding" in headers


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
        # (BaseCheck's cut is due at this start plus the timeout)
        until = asyncio.get_running_loop().time() + self.timeout * BODY_SHARE
        exchange = await self._connect()
        try:
            try:
                response = await exchange.request("GET", self.path, self.head)
            except HeadTooLarge as exc:
                raise CheckFailed(f"{exc} ({self.url})") from exc
            status = response.status_code
            if not 200 <= status < 400:
                raise CheckFailed(f"HTTP {status} from {self.url}")
            encoding = dict(response.headers).get(b"content-encoding", b"").decode("latin-1")
            keep = self.expect is not None
            try:
                body = await read_body(
                    exchange, encoding, MAX_BODY, until, keep, until_close=not framed(response)
                )
            except OSError as exc:  # a framing error (h11's, as a ConnectionError)
                why = str(exc) if type(exc) is ConnectionError else describe_error(exc)
                broke = "" if type(exc) is ConnectionError else "its body broke off: "
                raise CheckFailed(f"HTTP {status} but {broke}{why}") from exc
            cut = f" ({body.cut})" if body.cut else ""
            if self.expect is None:
                return Passed(f"HTTP {status}{cut}")
            if self.expect.encode() not in body.data:
                raise CheckFailed(f"HTTP {status} but the body lacks {self.expect!r}{cut}")
            return Passed(f"HTTP {status}, body has {self.expect!r}")
        finally:
            await exchange.close()
