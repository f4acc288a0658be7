"""Health that tells the truth: what keeps HAProxy from serving the desired state, and how
many servers of a backend HAProxy has UP right now.

For supervisors, keepalived and anycast health checkers (docs/health.md): synapse's
``/health`` is 503 while ``problems`` lists anything; ``/health/<service>`` asks HAProxy
itself (one `show servers state <backend>`), not a cached view, so a server HAProxy's own
check took down counts at once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from synapse.haproxy.running import RunningServer, RunningState
from synapse.haproxy.runtime import RuntimeClient
from synapse.haproxy.sockets import HAProxySocketError
from synapse.haproxy.status import HAProxyStatus


def problems(
    info: HAProxyStatus,
    runtime_error: str | None,
    alive: bool | None,
    settled: bool,
    applied: bool,
) -> list[str]:
    """Why HAProxy does not run the desired state; empty when it does.

    ``alive``: the managed HAProxy runs (None: not managed); ``settled``: HAProxy still
    differed after reloading the current candidate; ``applied``: a desired state exists.
    """
    found = []
    if not applied:
        found.append("no desired state applied yet (starting)")
    if alive is False:
        found.append("HAProxy is not running")
    if runtime_error is not None:
        found.append(f"HAProxy's admin socket does not answer: {runtime_error}")
    if info.validation_error is not None:
        found.append(f"the config cannot be applied (invalid): {info.validation_error['message']}")
    if info.last_reload_error is not None:
        found.append(f"the last reload or start failed: {info.last_reload_error['message']}")
    if settled:
        found.append("HAProxy still differs from the desired config after reloading it")
    return [line[:500] for line in found]


async def backend_servers(
    runtime: Sequence[RuntimeClient], view: RunningState | None, backend: str
) -> dict[str, str] | None:
    """{server: state label} of ``backend`` as HAProxy has it now (the runtime socket;
    without one, the last view read); None when HAProxy has no such backend."""
    return (await servers_of(runtime, view, [backend]))[backend]


async def servers_of(
    runtime: Sequence[RuntimeClient], view: RunningState | None, backends: Sequence[str]
) -> dict[str, dict[str, str] | None]:
    """``backend_servers`` of each of ``backends``, read in one batch on one connection
    (one `show servers state <b>` each, one round trip); all None when HAProxy does not
    answer (/health says why)."""
    found: Mapping[str, Mapping[str, RunningServer] | None]
    if runtime:
        # A client of its own, a connection per read (as the reader's settle reads): during
        # an apply the controller's client hands out the apply's held connection, which two
        # tasks must not read at once (zone_health's looks run beside the applies).
        apart = RuntimeClient(runtime[0].path, runtime[0].timeout)
        try:
            _, found = await apart.read_state(list(backends), with_pid=False)
        except HAProxySocketError:
            return dict.fromkeys(backends)
    else:
        known = view.backends if view is not None and view.backends is not None else {}
        found = {backend: known.get(backend) for backend in backends}
    return {backend: _labels(found.get(backend)) for backend in backends}


def _labels(servers: Mapping[str, RunningServer] | None) -> dict[str, str] | None:
    if servers is None:
        return None
    return {name: server.label for name, server in sorted(servers.items())}


def service_verdict(
    service: str, backend: str, servers: Mapping[str, str] | None, min_up: int
) -> tuple[bool, dict[str, Any]]:
    """(healthy, JSON body) for ``/health/<service>``: at least ``min_up`` servers UP."""
    up = sum(1 for state in (servers or {}).values() if state == "UP")
    ok = servers is not None and up >= min_up
    body: dict[str, Any] = {"service": service, "backend": backend, "ok": ok, "up": up,
                            "min_up": min_up, "servers": dict(servers or {})}  # fmt: skip
    if servers is None:
        body["error"] = "HAProxy does not run this backend (or does not answer)"
    return ok, body
