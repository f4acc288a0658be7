"""POST /maintenance/<service> with a hostile JSON body: a 400 naming what is wrong, never
a 500 with a traceback in the log, and no maintenance entered (the admin API fuzz of
review s44 found JSON nested deeper than the parser's recursion limit and a "for" past
float's range answered 500)."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from nerve.admin import add_maintenance_routes
from smartstack import httpserver as web
from smartstack.admin import AdminServer


class RecordingService:
    """Stands in for nerve.service.Service: a refused body must never reach it."""

    def __init__(self) -> None:
        self.entered: list[tuple[str, float | None]] = []

    def enter_maintenance(self, reason: str, duration: float | None) -> None:
        self.entered.append((reason, duration))


def post(body: bytes) -> web.Request:
    headers = web.Headers({"content-type": "application/json"})
    return web.Request("POST", "/maintenance/web", headers, body)


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"[" * 100_000, "not valid JSON"),
        (b'{"a":' * 50_000, "not valid JSON"),
        (b"[" * 20_000 + b"]" * 20_000, "not valid JSON"),
        (b'{"reason": "x", "for": 1' + b"0" * 400 + b"}", "'for' must be a positive number"),
        (b'{"reason": "x", "for": -1' + b"0" * 400 + b"}", "'for' must be a positive number"),
        (b'{"reason": "x", "for": 1e999}', "'for' must be a positive number"),
    ],
)
async def test_a_body_the_parser_cannot_hold_is_a_400_and_changes_nothing(
    body: bytes, says: str
) -> None:
    service = RecordingService()
    services: dict[str, Any] = {"web": service}
    admin = AdminServer("127.0.0.1", 0, CollectorRegistry(), dict)
    add_maintenance_routes(admin, lambda: services)
    request = post(body)
    with pytest.raises(web.HTTPBadRequest) as refused:
        await admin.router.resolve(request)(request)
    assert says in refused.value.body.decode()
    assert service.entered == []
