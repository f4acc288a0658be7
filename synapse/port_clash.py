"""``-k``: does synapse's admin port collide with a port the HAProxy config binds?

Airbnb configs carry ``listen stats :3212``, synapse's admin port before 1026: one
of the two would fail to bind at start. We look at every bind the user wrote:
``extra_sections`` titles (``listen NAME ADDR:PORT``) and ``bind`` lines, managed
mode's stats page (``haproxy.managed.stats.bind``), the shared frontend, each
service's frontend/listen lines, its ``port`` and the addresses of its
``zone_routing.zone_of_address`` (bound on that port).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: synapse.config calls this module from its loader
    from synapse.config import SynapseConfig

_WILDCARDS = {"", "*", "0.0.0.0", "::", "[::]"}
_TCP_PREFIXES = {"ipv4", "ipv6", "tcp", "tcp4", "tcp6"}  # others: unix@, fd@, udp@, ...


def _endpoints(token: str) -> Iterator[tuple[str, int, int]]:
    """``[host]:port[-port]`` items of a bind argument (comma lists): (host, low, high)."""
    for item in token.split(","):
        item = item.strip()
        prefix, at, rest = item.partition("@")
        if at:
            if prefix not in _TCP_PREFIXES:
                continue
            item = rest
        host, colon, ports = item.rpartition(":")
        low, _, high = ports.partition("-")
        if colon and low.isdigit() and (not high or high.isdigit()):
            yield host.strip("[]"), int(low), int(high or low)


def _bind_lines(lines: list[str], where: str) -> Iterator[tuple[str, str]]:
    for line in lines:
        words = line.split()
        if len(words) >= 2 and words[0] == "bind":
            yield where, words[1]


def binds(config: SynapseConfig) -> Iterator[tuple[str, str]]:
    """(where it was written, the address text) for every TCP bind in the config."""
    hap = config.haproxy
    if hap is None:
        return
    for title, lines in hap.extra_sections.items():
        words = title.split()
        where = f"haproxy.extra_sections[{title!r}]"
        if len(words) >= 3 and words[0] in ("listen", "frontend"):
            yield where, words[2]  # HAProxy 1.x title: `listen NAME ADDR:PORT`
        yield from _bind_lines(lines, where)
    if hap.managed is not None and hap.managed.stats.enabled:
        yield "haproxy.managed.stats.bind", hap.managed.stats.bind  # HAProxy's stats page
    yield from _bind_lines(hap.shared_frontend, "haproxy.shared_frontend")
    for name, service in config.services.items():
        block = service.haproxy
        if block.disabled:
            continue
        where = f"services.{name}.haproxy"
        for key in ("frontend", "listen", "shared_frontend"):
            lines = getattr(block, key)
            if lines:  # (most services of an edge have none: SIGHUP runs this on all)
                yield from _bind_lines(lines, f"{where}.{key}")
        if block.port is not None:
            yield f"{where}.port", f"{block.bind_address or hap.bind_address}:{block.port}"
            # zone signals: the frontend binds each arrival address on the same port too
            routing = service.zone_routing
            for address in sorted(routing.zone_of_address if routing else ()):
                host = f"[{address}]" if ":" in address else address
                yield f"services.{name}.zone_routing.zone_of_address", f"{host}:{block.port}"


def _same_address(admin_host: str, bind_host: str) -> bool:
    def norm(host: str) -> str:
        return "127.0.0.1" if host == "localhost" else host

    if admin_host in _WILDCARDS or bind_host in _WILDCARDS:
        return True
    return norm(admin_host) == norm(bind_host)


def admin_port_clashes(config: SynapseConfig) -> list[str]:
    """One line per bind that takes the admin port on an overlapping address."""
    admin = config.admin
    if not admin.port:  # None: disabled; 0: a free port is picked
        return []
    clashes = []
    for where, text in binds(config):
        for host, low, high in _endpoints(text):
            if low <= admin.port <= high and _same_address(admin.host, host):
                clashes.append(
                    f"admin.port {admin.port} (on {admin.host}) clashes with {where}: "
                    f"HAProxy binds {text}; set admin.port to a free port, or null to disable"
                )
    return clashes
