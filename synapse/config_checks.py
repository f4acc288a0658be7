"""Cross-field checks of a whole synapse config: zone routing and routes against the rest."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from synapse.haproxy.routes import RouteSpec, compile_routes, frontend_mode
from synapse.haproxy.words import has_env, words
from synapse.zone_config import check_dynamic_balance, check_signals, check_zone_backend_names

if TYPE_CHECKING:
    from synapse.config import HAProxyConfig, SynapseConfig


def check_zone_routing(config: SynapseConfig) -> None:
    """haproxy.defaults' `balance` holds for a zone-routed backend without its own; the
    zone signals need what they read; zone backends' names may not collide."""
    defaults = config.haproxy.defaults if config.haproxy else []
    for name, service in config.services.items():
        if service.zone_routing is not None:
            lines = [*defaults, *service.haproxy.backend, *service.haproxy.listen]
            try:
                check_dynamic_balance(lines)
            except ValueError as exc:
                raise ValueError(
                    f"services.{name} (balance from haproxy.defaults): {exc}"
                ) from None
            hap = service.haproxy
            mode = frontend_mode([*hap.frontend, *hap.listen], defaults)
            path = config.haproxy.config_file_path if config.haproxy else None
            has_port = hap.has_frontend and hap.port is not None
            check_signals(name, service.zone_routing, has_port, mode, path)
    backends = {name: s.haproxy.backend_name or name for name, s in config.services.items()}
    routed = {n: s.zone_routing for n, s in config.services.items() if s.zone_routing}
    check_zone_backend_names(backends, {n: r for n, r in routed.items() if r.signals})


def check_routes(config: SynapseConfig) -> None:
    """Routes need the shared frontend, and no host + path may go to two services."""
    routed = {}
    for name, service in config.services.items():  # (runs on every SIGHUP: kept lean)
        hap, routes = service.haproxy, service.haproxy.routes
        if (routes.hosts or routes.paths) and not hap.disabled:
            routed[name] = RouteSpec(hap.backend_name or name, routes.hosts, routes.paths)
    if not routed:
        return
    hap = config.haproxy
    if hap is None or not (hap.shared_frontend or "shared_frontend" in hap.model_fields_set):
        names = ", ".join(sorted(routed))
        raise ValueError(
            f"services {names} have haproxy.routes, which need haproxy.shared_frontend "
            "(the frontend that routes them; it may be [])"
        )
    if not hap.config_file_path:
        raise ValueError(
            "haproxy.routes need haproxy.config_file_path (the map files live beside it)"
        )
    if frontend_mode(hap.shared_frontend, hap.defaults) != "http":
        raise ValueError(
            "haproxy.routes need an HTTP shared frontend: add 'mode http' to "
            "haproxy.shared_frontend or haproxy.defaults"
        )
    compile_routes(routed)  # raises RouteCollision naming both services


def relative_socket_path(config: HAProxyConfig) -> str | None:
    """A relative path that would be written on a `stats socket` line, which HAProxy reads
    as an address ("missing port specification in 'haproxy.sock'", no key named). Managed
    mode places the sockets not given beside ``config_file_path``; a `global` line's
    relative unix path fails in any mode. Other relative paths keep meaning the cwd (Ruby)."""
    stats_lines = [
        tokens
        for tokens in (words(line) for line in config.global_)
        if tokens[:2] == ["stats", "socket"]
    ]
    keys: list[tuple[str, str | None]] = []
    if config.managed is not None:
        # (its directory places the sockets not given: synapse.haproxy.settings.own_socket)
        if not config.managed.master_socket_path or not (config.socket_paths or stats_lines):
            keys.append(("config_file_path", config.config_file_path))
        keys.append(("managed.master_socket_path", config.managed.master_socket_path))
        keys += [("socket_file_path", path) for path in config.socket_paths]
    # (an address: `ipv4@`, `host:port`; `unix@name` HAProxy takes relative to its cwd;
    # `${SOCKDIR}/a.sock`: HAProxy expands it with its environment, not judged here)
    keys += [
        ("global (stats socket)", tokens[2])
        for tokens in stats_lines
        if len(tokens) > 2
        and not has_env(tokens[2])
        and "@" not in tokens[2]
        and ":" not in tokens[2]
    ]
    for key, path in keys:
        if path and not os.path.isabs(path):
            return (
                f"{key}: {path!r} is relative, and HAProxy reads a relative `stats socket` "
                f"path as host:port: give an absolute path (from here {os.path.abspath(path)!r})"
            )
    return None
