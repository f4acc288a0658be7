"""nerve's admin API on top of the shared AdminServer: status, health and maintenance routes.

    GET    /health/{service}        200 "up" / 503 "down" or "maintenance" (JSON)
    GET    /maintenance             every service's maintenance flag
    POST   /maintenance/{service}   {"reason": "...", "for": seconds or null} -> withdraw now
                                    (joins a maintenance in force: "joined" in the answer)
    DELETE /maintenance/{service}   back up (registered again once its checks pass); ends
                                    every joined maintenance ("ended" in the answer)

The POST and DELETE answers say whether the flag file in ``state_dir`` agrees
(``"persisted"``; when false, ``"persist_error"``): on a full or read-only disk the change
is in force, only not on disk yet (nerve retries every round), as synapse's zone API does.

Writes require a JSON body with ``Content-Type: application/json``: a web page in a
browser on the same host cannot send that cross-origin without a preflight.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable
from typing import Any

from nerve.maintenance import MaintenanceFlag
from nerve.service import Service
from smartstack import httpserver as web
from smartstack.admin import AdminServer, json_response

MAX_REASON = 500
SYNC_WAIT = 2.0  # answer once the registry agrees, or after this long


async def settled(service: Service, **more: Any) -> web.Response:
    """The service's status once its registry write is done (bounded wait)."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(service.wait_in_sync(), SYNC_WAIT)
    return json_response({"service": service.name, **service.status(), **more})


def flag_dict(flag: MaintenanceFlag | None) -> dict[str, Any] | None:
    return None if flag is None else flag.shown()


def persisted(service: Service) -> dict[str, Any]:
    """Whether a restart now would find the flag in force (``persist_error``: why not)."""
    error = service.store.persist_error(service.name)
    return {"persisted": True} if error is None else {"persisted": False, "persist_error": error}


def add_maintenance_routes(admin: AdminServer, services: Callable[[], dict[str, Service]]) -> None:
    def lookup(request: web.Request) -> Service:
        name = request.match_info["service"]
        service = services().get(name)
        if service is None:
            raise web.HTTPNotFound(
                text=f"unknown service {name!r}; known: {', '.join(sorted(services())) or '-'}\n"
            )
        return service

    async def list_flags(_: web.Request) -> web.Response:
        return json_response({name: s.status()["maintenance"] for name, s in services().items()})

    async def enter(request: web.Request) -> web.Response:
        service = lookup(request)
        if request.content_type != "application/json":
            raise web.HTTPUnsupportedMediaType(text="send a JSON body (application/json)\n")
        try:
            body = await request.json()
        except ValueError:
            raise web.HTTPBadRequest(text="the body is not valid JSON\n") from None
        reason, duration = parse_request(body)
        joined = service.enter_maintenance(reason, duration)
        return await settled(service, joined=flag_dict(joined), **persisted(service))

    async def leave(request: web.Request) -> web.Response:
        service = lookup(request)
        ended = service.leave_maintenance()
        return await settled(service, ended=flag_dict(ended), **persisted(service))

    async def health(request: web.Request) -> web.Response:
        """The service's check state, for keepalived / anycast health checkers."""
        service = lookup(request)
        state = service.state
        word = "up" if state.wanted else "maintenance" if state.maintenance else "down"
        body = {"service": service.name, "state": word, "reason": state.reason(),
                "registered": service.registered}  # fmt: skip
        return json_response(body, 200 if word == "up" else 503)

    admin.add_route("GET", "/health/{service}", health, probe=True)
    admin.add_route("GET", "/maintenance", list_flags)
    admin.add_route("POST", "/maintenance/{service}", enter)
    admin.add_route("DELETE", "/maintenance/{service}", leave)


def parse_request(body: Any) -> tuple[str, float | None]:
    """Validate {"reason": str, "for": seconds|null}; HTTP 400 with the reason otherwise."""
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text='expected a JSON object {"reason": ..., "for": ...}\n')
    reason = body.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        raise web.HTTPBadRequest(text="'reason' must be a non-empty string\n")
    reason = " ".join(reason.split())[:MAX_REASON]  # one line in logs and /status
    duration = body.get("for")
    return reason, None if duration is None else seconds(duration)


def seconds(value: Any) -> float:
    """'for': a positive finite number of seconds; HTTP 400 otherwise."""
    bad = web.HTTPBadRequest(text="'for' must be a positive number of seconds\n")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad
    try:
        duration = float(value)
    except OverflowError:  # JSON integers have no bound: 1 followed by 400 zeros
        raise bad from None
    if not math.isfinite(duration) or duration <= 0:
        raise bad
    return duration
