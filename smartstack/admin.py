"""The admin HTTP server both daemons run: /health, /status (JSON), /metrics.

Binds 127.0.0.1 by default. Daemons add their own routes (maintenance, the
synapse status page) with ``add_route`` before ``start``. With a token
(``admin.token_file``), every request that is not a read (GET/HEAD/OPTIONS) needs
``Authorization: Bearer <token>``: those are the ones that change traffic.

/status and /metrics are encoded in a worker thread: at 1,000 services x 20 servers they
are ~5 MB of indented JSON (~0.3-1.6 s of pure-Python encoding) and ~20,000 series
(~0.5 s), which on the event loop would hold back every registry change meanwhile (a
Prometheus scrape every 15 s stalled changes by half a second). In a thread the encoding
gives the GIL up at every switch interval (5 ms): each of the loop's wake-ups meanwhile
may wait up to that long, instead of the whole encoding. The thread reads containers the
loop may change (a collector reading the daemon's state): should one change size under
it (RuntimeError), that response is made on the loop as before.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry

from smartstack import httpserver as web
from smartstack import prometheus_lean
from smartstack.admin_refusals import REFUSALS, Refusals
from smartstack.logs import event

log = logging.getLogger("smartstack.admin")

Handler = Callable[[web.Request], Awaitable[web.Response]]

_T = TypeVar("_T")

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def authorized(request: web.Request, token: str) -> bool:
    """Whether the request carries ``Authorization: Bearer <token>`` (constant-time compare)."""
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode(), token.encode()
    )


def check_token(
    request: web.Request,
    token: str | None,
    refusals: Refusals = REFUSALS,
    route: str | None = None,
) -> None:
    """Requests that change something need the token; reads never do (HTTPUnauthorized).
    ``route``: the pattern the request matched (``/maintenance/{service}``): a refused
    caller is counted per route, whatever path it tries under it."""
    if token is None or request.method in READ_METHODS or authorized(request, token):
        return
    refusals.refused(request.method, route or request.path, request.path, request.remote)
    raise web.HTTPUnauthorized(
        text="this endpoint needs Authorization: Bearer <admin token>\n",
        headers={"WWW-Authenticate": 'Bearer realm="admin"'},
    )


@dataclass(frozen=True)
class Health:
    """A /health answer: 200 when ``ok``, else 503; ``detail`` is the JSON body."""

    ok: bool
    detail: dict[str, Any]

    def response(self) -> web.Response:
        return json_response({"ok": self.ok, **self.detail}, 200 if self.ok else 503)


class AdminServer:
    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry,
        status: Callable[[], dict[str, Any]],
        healthy: Callable[[], bool | Health] = lambda: True,
        token: str | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.registry = registry
        self._status = status
        self._healthy = healthy
        self._token = token
        self.router = web.Router()
        self.add_route("GET", "/health", self._health, probe=True)
        self.add_route("GET", "/status", self._status_json)
        self.add_route("GET", "/metrics", self._metrics)
        self._server: web.HTTPServer | None = None

    def add_route(self, method: str, path: str, handler: Handler, probe: bool = False) -> None:
        """``probe``: a cheap health check, still answered while other clients hold every
        connection (see smartstack.http_slots); keep /status-like pages off it."""
        token = self._token

        async def checked(request: web.Request) -> web.Response:
            check_token(request, token, route=path)
            return await handler(request)

        self.router.add(method, path, checked, probe)

    async def start(self) -> None:
        server = web.HTTPServer(self.router, self.host, self.port)
        await server.start()
        self._server = server
        self.port = server.port  # port 0 asks the OS for a free port: report the real one
        event(log, "admin_listening", host=self.host, port=self.port)

    async def stop(self) -> None:
        REFUSALS.flush(final=True)  # (the count of a last burst, not lost with the daemon)
        if self._server is not None:
            await self._server.stop()
            self._server = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def _health(self, _: web.Request) -> web.Response:
        ok = self._healthy()
        if isinstance(ok, Health):
            return ok.response()
        return web.Response(status=200 if ok else 503, text="ok\n" if ok else "unhealthy\n")

    async def _status_json(self, _: web.Request) -> web.Response:
        data = self._status()  # built on the loop: the daemon's state is the loop's
        text = await off_the_loop(json_text, data)
        return web.Response(text=text, content_type="application/json")

    async def _metrics(self, _: web.Request) -> web.Response:
        body = await off_the_loop(prometheus_lean.text, self.registry)
        return web.Response(body=body, headers={"Content-Type": prometheus_lean.CONTENT_TYPE})


async def start_or_log(admin: AdminServer) -> bool:
    """Start the admin server; if its port is taken (or the address is wrong), log one line
    and carry on: registering and routing matter more than the admin page."""
    try:
        await admin.start()
    except OSError as exc:
        event(log, "admin_not_started", level=logging.ERROR, host=admin.host, port=admin.port,
              error=exc.strerror or str(exc), detail="running without the admin API")  # fmt: skip
        await admin.stop()
        return False
    return True


async def off_the_loop(encode: Callable[[Any], _T], data: Any) -> _T:
    """``encode(data)`` in a worker thread; on the loop if something changed under it."""
    try:
        return await asyncio.to_thread(encode, data)
    except RuntimeError:  # "dictionary changed size during iteration": here, undisturbed
        return encode(data)


def json_text(data: Any) -> str:
    return json.dumps(data, indent=2, default=str) + "\n"


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, text=json_text(data), content_type="application/json")
