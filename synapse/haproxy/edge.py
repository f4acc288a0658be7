"""Edge keys rendered into the generated config: access logs, proxy protocol, queueing.

- ``haproxy.logging`` (top level): a global ``log`` line, and on every generated frontend
  ``log global`` plus the format (``option httplog``/``option tcplog`` or a JSON
  ``log-format``). A tcp frontend asked for httplog gets tcplog (HAProxy would anyway,
  with a warning).
- ``accept_proxy``: ``accept-proxy`` on a service's bind (service key) or on the shared
  frontend's ``bind`` lines (top-level key).
- per service ``send_proxy_v2``, ``maxconn``, ``maxqueue``: server options; ``timeout_queue``:
  the backend's ``timeout queue``.
- the shared frontend's TLS lines (``synapse.haproxy.tls``) and route lines
  (``synapse.haproxy.routes``) when a service has routes.
"""

from __future__ import annotations

from pathlib import Path

from synapse.config import HAProxyConfig, ServiceHAProxyConfig
from synapse.edge_config import HAProxyLogging
from synapse.haproxy import routes, tls
from synapse.haproxy.routes import frontend_mode

# JSON access-log lines. Strings that a client controls go through the `json` converter
# (it escapes, the quotes are ours);
# %HM and the names/addresses HAProxy writes itself cannot hold a quote.
_JSON_COMMON = (
    '"time":"%t","client_ip":"%ci","client_port":%cp,"frontend":"%ft","backend":"%b",'
    '"server":"%s","bytes_read":%B,"bytes_uploaded":%U,"time_queue":%Tw,'
    '"time_connect":%Tc,"time_total":%Tt,"termination":"%ts","retries":%rc,'
    '"queue_server":%sq,"queue_backend":%bq'
)
JSON_TCP_FORMAT = "{" + _JSON_COMMON + "}"
JSON_HTTP_FORMAT = (
    "{" + _JSON_COMMON + ',"status":%ST,"time_request":%TR,"time_response":%Tr,'
    '"time_active":%Ta,"method":"%HM","host":"%[var(txn.synapse_log_host),json(utf8s)]",'
    '"path":"%[var(txn.synapse_log_path),json(utf8s)]"}'
)


def global_lines(config: HAProxyConfig) -> list[str]:
    """Lines for ``global``: where the access logs go."""
    if config.logging is None:
        return []
    # len: JSON lines outgrow syslog's default 1024 bytes.
    return [f"log {config.logging.address} len 8192 {config.logging.facility}"]


def log_lines(logging: HAProxyLogging | None, mode: str) -> list[str]:
    """A generated frontend's access-log lines for its ``mode``."""
    if logging is None:
        return []
    http = mode == "http"
    if logging.format == "json":
        if not http:
            return ["log global", f"log-format '{JSON_TCP_FORMAT}'"]
        return [
            "log global",
            # Captured now: the request is gone when the log line is written. The whole
            # header (fhdr): hdr splits at commas and logged "a.test, b.test" as b.test.
            "http-request set-var(txn.synapse_log_host) req.fhdr(host)",
            "http-request set-var(txn.synapse_log_path) path",
            f"log-format '{JSON_HTTP_FORMAT}'",
        ]
    option = "httplog" if logging.format == "httplog" and http else "tcplog"
    return ["log global", f"option {option}"]


def service_frontend_lines(config: HAProxyConfig, frontend: list[str]) -> list[str]:
    """A service's frontend lines plus its access-log lines."""
    return frontend + log_lines(config.logging, frontend_mode(frontend, config.defaults))


def bind(bind_line: str, accept_proxy: bool) -> str:
    """A bind address (and options) with ``accept-proxy`` when asked for."""
    if accept_proxy and "accept-proxy" not in bind_line.split():
        return f"{bind_line} accept-proxy"
    return bind_line


def server_options(hap: ServiceHAProxyConfig) -> str:
    """The service's ``server_options`` plus the server keys among its edge keys."""
    parts = [hap.server_options or ""]
    if hap.send_proxy_v2:
        parts.append("send-proxy-v2")
    if hap.maxconn is not None:
        parts.append(f"maxconn {hap.maxconn}")
    if hap.maxqueue is not None:
        parts.append(f"maxqueue {hap.maxqueue}")
    return " ".join(p for p in parts if p)


def backend_lines(hap: ServiceHAProxyConfig, lines: list[str]) -> list[str]:
    """The service's backend lines plus ``timeout queue``."""
    if hap.timeout_queue is None:
        return lines
    return [*lines, f"timeout queue {hap.timeout_queue}"]


def shared_frontend_lines(config: HAProxyConfig, lines: list[str], routed: bool) -> list[str]:
    """The shared frontend: the operator's and services' lines with ``accept-proxy`` on its
    binds, the TLS bind, its access-log lines, and the route lines when any service has
    routes."""
    out = [
        bind(line, config.accept_proxy) if line.split()[:1] == ["bind"] else line for line in lines
    ]
    if config.tls is not None and config.config_file_path:
        paths = tls.tls_paths(Path(config.config_file_path))
        out += tls.frontend_lines(config.tls, config.bind_address, config.accept_proxy, paths)
    out += log_lines(config.logging, frontend_mode(lines, config.defaults))
    if routed and config.config_file_path:
        out += routes.frontend_lines(routes.map_paths(Path(config.config_file_path)), lines)
    return out
