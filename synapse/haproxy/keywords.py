"""Which proxy keywords belong in a frontend and which in a backend (for `listen` lines).

Airbnb synapse sorts each line of a service's ``listen`` list into its frontend,
its backend, or both, by the line's leading keyword; a line that fits neither is
dropped with a warning. The tables below follow HAProxy 2.6's configuration
manual (section 4.1, "Proxy keywords matrix"); a ``no `` prefix is ignored for
matching. Matching is on whole words: ``log`` does not match ``log-format``.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from synapse.config import ServiceHAProxyConfig

_COMMON = (
    "acl", "compression", "description", "disabled", "enabled", "email-alert", "errorfile",
    "errorfiles", "errorloc", "errorloc302", "errorloc303", "filter", "force-persist",
    "http-after-response", "http-error", "http-request", "http-response", "id",
    "ignore-persist", "log", "log-tag", "mode", "option forwardfor", "option http-buffer-request",
    "option http-keep-alive", "option http-no-delay", "option http-pretend-keepalive",
    "option http-server-close", "option http-restrict-req-hdr-names", "option http_proxy",
    "option httpclose", "option independent-streams", "option nolinger", "option originalto",
    "option splice-auto", "option splice-request", "option splice-response", "option tcpka",
    "redirect", "stats", "tcp-request content", "tcp-request inspect-delay",
    "timeout http-keep-alive", "timeout http-request", "timeout tarpit", "unique-id-header",
)  # fmt: skip

FRONTEND_KEYWORDS: tuple[str, ...] = (
    *_COMMON,
    "backlog", "bind", "capture cookie", "capture request header", "capture response header",
    "declare capture", "default_backend", "error-log-format", "log-format", "log-format-sd",
    "maxconn", "monitor", "monitor fail", "monitor-uri", "option accept-invalid-http-request",
    "option clitcpka", "option contstats", "option disable-h2-upgrade", "option dontlog-normal",
    "option dontlognull", "option h1-case-adjust-bogus-client", "option http-ignore-probes",
    "option http-use-proxy-header", "option httplog", "option httpslog",
    "option log-separate-errors", "option logasap", "option socket-stats",
    "option tcp-smart-accept", "option tcplog", "rate-limit sessions",
    "stick-table", "tcp-request connection", "tcp-request session", "timeout client",
    "timeout client-fin", "unique-id-format", "use_backend",
)  # fmt: skip

BACKEND_KEYWORDS: tuple[str, ...] = (
    *_COMMON,
    "balance", "cookie", "default-server", "dispatch", "dynamic-cookie-key", "external-check",
    "fullconn", "hash-balance-factor", "hash-type", "http-check", "http-reuse",
    "http-send-name-header", "load-server-state-from-file", "max-keep-alive-queue",
    "option abortonclose", "option accept-invalid-http-response", "option allbackups",
    "option checkcache", "option external-check", "option h1-case-adjust-bogus-server",
    "option http-check", "option httpchk", "option lb-agent-chk", "option ldap-check",
    "option log-health-checks", "option mysql-check", "option persist", "option pgsql-check",
    "option prefer-last-server", "option redis-check", "option redispatch", "option smtpchk",
    "option spop-check", "option srvtcpka", "option ssl-hello-chk", "option tcp-check",
    "option tcp-smart-connect", "option transparent", "persist rdp-cookie", "retries",
    "retry-on", "server", "server-state-file-name", "server-template", "source", "stick",
    "stick match", "stick on", "stick store-request", "stick store-response", "stick-table",
    "tcp-check", "tcp-response content", "tcp-response inspect-delay", "timeout check",
    "timeout connect", "timeout queue", "timeout server", "timeout server-fin",
    "timeout tunnel", "use-fcgi-app", "use-server",
)  # fmt: skip


def _normalise(line: str) -> str:
    text = " ".join(line.split()).lower()
    return text[3:] if text.startswith("no ") else text


def _matches(line: str, keywords: tuple[str, ...]) -> bool:
    text = _normalise(line)
    return any(text == k or text.startswith(k + " ") for k in keywords)


# Cached: a fleet's services repeat the same few lines (1,000 services: 1,000 times each).
@functools.lru_cache(maxsize=4096)
def belongs_in_frontend(line: str) -> bool:
    return _matches(line, FRONTEND_KEYWORDS)


@functools.lru_cache(maxsize=4096)
def belongs_in_backend(line: str) -> bool:
    return _matches(line, BACKEND_KEYWORDS)


def sort_lines(
    name: str, hap: ServiceHAProxyConfig, warnings: list[str]
) -> tuple[list[str], list[str]]:
    """Service ``name``'s frontend and backend lines: its own, and its ``listen`` lines
    sorted by keyword (a line that fits neither: dropped, with a warning)."""
    frontend = list(hap.frontend)
    backend = list(hap.backend)
    for line in hap.listen:
        to_frontend, to_backend = belongs_in_frontend(line), belongs_in_backend(line)
        if to_frontend:
            frontend.append(line)
        if to_backend:
            backend.append(line)
        if not (to_frontend or to_backend):
            warnings.append(f"service {name}: listen line {line!r} fits no section: dropped")
    return frontend, backend
