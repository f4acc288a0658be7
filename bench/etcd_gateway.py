"""etcd's JSON gateway as the benchmarks' registry writers use it: one POST, and the keys
named as nerve names them."""

from __future__ import annotations

import base64
import http.client
import json
from collections.abc import Callable
from typing import Any

from smartstack.record import Registration


def b64(text: str | bytes) -> str:
    data = text.encode() if isinstance(text, str) else text
    return base64.b64encode(data).decode()


def record_key(path: str, registration: Registration) -> str:
    return f"{path.rstrip('/')}/{registration.name}_{registration.host}_{registration.port}"


def post(
    conn: Callable[[], http.client.HTTPConnection], endpoint: str, body: dict[str, Any]
) -> dict[str, Any]:
    """POST ``/v3/<endpoint>`` on ``conn()``'s keep-alive connection; one the server dropped
    is tried once more."""
    data = json.dumps(body).encode()
    for attempt in range(2):
        try:
            conn().request("POST", f"/v3/{endpoint}", data, {"Content-Type": "application/json"})
            resp = conn().getresponse()
            break
        except (http.client.HTTPException, OSError):
            conn().close()
            if attempt:
                raise
    payload = resp.read()
    if resp.status != 200:
        raise RuntimeError(f"etcd {endpoint} answered {resp.status}: {payload[:300]!r}")
    return json.loads(payload)
