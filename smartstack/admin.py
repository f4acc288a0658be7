"""The admin HTTP server both daemons run: /health, /status (JSON), /metrics.

Binds 127.0.0.1 by default. Daemons add their own routes (maintenance, the
synapse status page) with ``add_route`` before ``start``. With a token
(``admin.token_file``), every request that is not a read (GET/HEAD/OPTIONS) needs
``Authorization: Bearer <token>``: those are the ones that change traffic.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from smartstack.logs import event

log = logging.getLogger("smartstack.admin")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def authorized(request: web.Request, token: str) -> bool:
    """Whether the request carries ``Authorization: Bearer <token>`` (constant-time compare)."""
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode(), token.encode()
    )


def bearer_auth(token: str | None) -> Any:
    """Middleware: requests that change something need the token; reads never do."""

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        needed = token is not None and request.method not in READ_METHODS
        if needed and not authorized(request, token or ""):
            # Never the token (nor what was sent in its place) in the log.
            event(log, "admin_unauthorized", level=logging.WARNING, method=request.method,
                  path=request.path[:200], remote=request.remote)  # fmt: skip
            raise web.HTTPUnauthorized(
                text="this endpoint needs Authorization: Bearer <admin token>\n",
                headers={"WWW-Authenticate": 'Bearer realm="admin"'},
            )
        return await handler(request)

    return check


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
        self.app = web.Application(middlewares=[bearer_auth(token)])
        self.app.router.add_get("/health", self._health)
        self.app.router.add_get("/status", self._status_json)
        self.app.router.add_get("/metrics", self._metrics)
        self._runner: web.AppRunner | None = None

    def add_route(self, method: str, path: str, handler: Handler) -> None:
        self.app.router.add_route(method, path, handler)

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        # Port 0 asks the OS for a free port: report the real one.
        sockets = getattr(site._server, "sockets", None) or []
        if sockets:
            self.port = sockets[0].getsockname()[1]
        event(log, "admin_listening", host=self.host, port=self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def _health(self, _: web.Request) -> web.Response:
        ok = self._healthy()
        if isinstance(ok, Health):
            return ok.response()
        return web.Response(status=200 if ok else 503, text="ok\n" if ok else "unhealthy\n")

    async def _status_json(self, _: web.Request) -> web.Response:
        return json_response(self._status())

    async def _metrics(self, _: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


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


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        status=status,
        text=json.dumps(data, indent=2, default=str) + "\n",
        content_type="application/json",
    )
