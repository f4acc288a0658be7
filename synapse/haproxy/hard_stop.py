"""The note ``synapse -k`` and the start print when ``hard-stop-after`` is set: what it cuts.

After a reload an old worker keeps serving its connections, for at most ``hard-stop-after``
(``global``); then it closes every one left, whatever is on it. Any HTTP response still
running then is cut (a download, server-sent events, a WebSocket, a gRPC stream, a
long-poll), and any ``mode tcp`` session (a database pool's, a broker's). ``timeout
server`` and ``timeout client`` do not bound these: they are idle timeouts, and a stream
that sends something more often than they allow lasts for ever. Measured (review s27): a
reload for an unrelated new service cut 12 of 12 HTTP and TCP streams 30.2 s after it
with ``hard-stop-after 30s`` and 30 s timeouts, the examples' values then. So any value
cuts something a service may do; the note says what, and when (docs/synapse-haproxy.md).
"""

from __future__ import annotations

from collections.abc import Mapping

from synapse.config import HAProxyConfig, ServiceConfig
from synapse.haproxy.keywords import sort_lines
from synapse.haproxy.routes import frontend_mode
from synapse.server_options import haproxy_ms


def _value(lines: list[str], keyword: str) -> str | None:
    """The argument of the last line ``keyword ARG`` in ``lines`` (None: no such line)."""
    words = keyword.split()
    found = [line.split() for line in lines if line.split()[: len(words)] == words]
    return found[-1][len(words)] if found and len(found[-1]) > len(words) else None


def _frontends(hap: HAProxyConfig, services: Mapping[str, ServiceConfig]) -> dict[str, list[str]]:
    """The names of the frontends clients connect to, by mode (``http``, ``tcp``)."""
    by_mode: dict[str, list[str]] = {"http": [], "tcp": []}
    for name, service in sorted(services.items()):
        own = service.haproxy
        if own.disabled or not own.has_frontend:
            continue
        frontend, _ = sort_lines(name, own, [])
        by_mode.setdefault(frontend_mode(frontend, hap.defaults), []).append(name)
    if hap.shared_frontend:
        by_mode.setdefault(frontend_mode(hap.shared_frontend, hap.defaults), []).append(
            "the shared frontend"
        )
    return by_mode


def hard_stop_note(hap: HAProxyConfig, services: Mapping[str, ServiceConfig]) -> str | None:
    """What ``hard-stop-after`` cuts after every reload, and when; None: no such line (old
    workers live until their last connection ends) or no frontend for it to cut."""
    hard = _value(hap.global_, "hard-stop-after")
    if hard is None or haproxy_ms(hard) is None:
        return None
    frontends = _frontends(hap, services)
    cut = []
    if frontends.get("http"):
        cut.append(
            f"every HTTP response still running (a download, server-sent events, WebSocket, "
            f"a gRPC stream, a long-poll) of {', '.join(frontends['http'])}"
        )
    if frontends.get("tcp"):
        cut.append(f"every TCP session of {', '.join(frontends['tcp'])}")
    if not cut:
        return None
    return (
        f"haproxy.global: hard-stop-after {hard}: {hard} after every reload (a service added or "
        f"changed, for one) the old worker cuts {' and '.join(cut)}; timeout "
        "server and timeout client do not bound them (idle timeouts). Leave it out (old "
        "workers then live until their last connection ends) or set it above the longest "
        "stream or connection lifetime (a pool's max lifetime), docs/synapse-haproxy.md"
    )
