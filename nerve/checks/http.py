"""HTTP(S) check: GET ``uri``; any 2xx or 3xx is up, optionally with ``expect`` in the body.

All HTTP checks of a daemon share one aiohttp ClientSession (one connector, one DNS
cache); each request opens a fresh connection, because "the service accepts new
connections" is what a health check has to prove. Like Airbnb's nerve, certificates
are not verified: the check talks to a local port, usually by IP address.
"""

from __future__ import annotations

import aiohttp

from nerve.checks.base import BaseCheck, CheckFailed, Passed

MAX_BODY = 64 * 1024  # enough to find an `expect` marker; a health page is small


def new_session() -> aiohttp.ClientSession:
    """The daemon's shared session (create it on the running loop)."""
    connector = aiohttp.TCPConnector(force_close=True, limit=0, ssl=False)
    return aiohttp.ClientSession(connector=connector, auto_decompress=True)


def format_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


async def read_body(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """Up to ``limit`` bytes of the body. (``content.read(n)`` returns whatever has arrived
    so far, often just the first chunk.)"""
    body = bytearray()
    while len(body) < limit:
        chunk = await response.content.read(limit - len(body))
        if not chunk:
            break
        body += chunk
    return bytes(body)


class HttpCheck(BaseCheck):
    type = "http"

    def __init__(
        self,
        name: str,
        session: aiohttp.ClientSession,
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
        self.session = session
        scheme = "https" if ssl else "http"
        path = uri if uri.startswith("/") else f"/{uri}"
        self.url = f"{scheme}://{format_host(host)}:{port}{path}"
        self.headers = dict(headers or {})
        self.expect = expect
        # The whole probe is cut by BaseCheck (which blames a stalled nerve less than a
        # slow service); aiohttp cuts only a connect given a shorter open_timeout.
        connect = open_timeout if open_timeout is not None and open_timeout < timeout else None
        self.client_timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect)

    async def probe(self) -> Passed:
        async with self.session.get(
            self.url,
            headers=self.headers,
            timeout=self.client_timeout,
            allow_redirects=False,  # a 3xx is an answer: the service is up
            ssl=False,
        ) as response:
            status = response.status
            if not 200 <= status < 400:
                raise CheckFailed(f"HTTP {status} from {self.url}")
            if self.expect is None:
                return Passed(f"HTTP {status}")
            body = await read_body(response, MAX_BODY)
            if self.expect.encode() not in body:
                raise CheckFailed(f"HTTP {status} but the body lacks {self.expect!r}")
            return Passed(f"HTTP {status}, body has {self.expect!r}")
