"""Health that tells the truth: what keeps HAProxy from serving the desired state, and how
many servers of a backend HAProxy has UP right now.

For supervisors, keepalived and anycast health checkers (docs/health.md): synapse's
``/health`` is 503 while ``problems`` lists anything; ``/health/<service>`` asks HAProxy
itself (`show servers state <backend>`, shared by the looks at once: ``looks``), not the
reader's view, so a server HAProxy's own check took down counts within a fraction of a second.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from synapse.haproxy.status import HAProxyStatus


def problems(
    info: HAProxyStatus,
    runtime_error: str | None,
    alive: bool | None,
    settled: bool,
    applied: bool,
    slow_for: float | None = None,
) -> list[str]:
    """Why HAProxy does not run the desired state; empty when it does.

    ``alive``: the managed HAProxy runs (None: not managed); ``settled``: HAProxy still
    differed after reloading the current candidate; ``applied``: a desired state exists;
    ``slow_for``: the admin socket connects but has not answered in time for that many
    seconds (a stalled worker: not gone, no reload before ``slow_socket.SLOW_LIMIT``).
    """
    found = []
    if not applied:
        found.append("no desired state applied yet (starting)")
    if alive is False:
        found.append("HAProxy is not running")
    if runtime_error is not None and slow_for is not None:
        found.append(f"HAProxy's admin socket is slow (connects, no answer in time for "
                     f"{slow_for:.0f} s: a stalled worker?): {runtime_error}")  # fmt: skip
    elif runtime_error is not None:
        found.append(f"HAProxy's admin socket does not answer: {runtime_error}")
    if info.validation_error is not None:
        found.append(f"the config cannot be applied (invalid): {info.validation_error['message']}")
    if info.last_reload_error is not None:
        found.append(f"the last reload or start failed: {info.last_reload_error['message']}")
    if settled:
        found.append("HAProxy still differs from the desired config after reloading it")
    return [line[:500] for line in found]


def service_verdict(
    service: str, backend: str, servers: Mapping[str, str] | None, min_up: int
) -> tuple[bool, dict[str, Any]]:
    """(healthy, JSON body) for ``/health/<service>``: at least ``min_up`` servers UP.
    Servers from synapse's last read (HAProxy's socket did not answer: ``looks.Labels``)
    count, and the body says so (``stale``)."""
    up = sum(1 for state in (servers or {}).values() if state == "UP")
    ok = servers is not None and up >= min_up
    body: dict[str, Any] = {"service": service, "backend": backend, "ok": ok, "up": up,
                            "min_up": min_up, "servers": dict(servers or {})}  # fmt: skip
    if servers is None:
        body["error"] = "HAProxy does not run this backend (or does not answer)"
    stale = getattr(servers, "stale", None)
    if stale is not None:
        body["stale"] = stale
    return ok, body
