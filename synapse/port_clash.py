"""Ports the config binds twice: refused at every load (``-k``, start, SIGHUP).

- synapse's admin port on a port the HAProxy config binds: Airbnb configs carry
  ``listen stats :3212``, synapse's admin port before 1026; one of the two would fail to
  bind at start.
- two HAProxy sections on one port and overlapping addresses (web's ``port`` moved onto
  api's, a service on the stats page's port): HAProxy binds both without an error
  (SO_REUSEPORT), and the kernel splits the connections between the two sections.

We look at every bind the user wrote:
``extra_sections`` titles (``listen NAME ADDR:PORT``) and ``bind`` lines, managed
mode's stats page (``haproxy.managed.stats.bind``), the shared frontend (and its TLS bind), each
service's frontend/listen lines, its ``port`` and the addresses of its
``zone_routing.zone_of_address`` (bound on that port).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: synapse.config calls this module from its loader
    from synapse.config import SynapseConfig

WILDCARDS = {"", "*", "0.0.0.0", "::", "[::]"}
_LOCALHOST = {"localhost": {"localhost", "127.0.0.1", "::1"}}  # synapse's default address
_TCP_PREFIXES = {"ipv4", "ipv6", "tcp", "tcp4", "tcp6"}  # others: unix@, fd@, udp@, ...


def endpoints(token: str) -> Iterator[tuple[str, int, int]]:
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


_SHARED = "the shared frontend"  # one section, whoever wrote its lines


Bind = tuple[str, str, str, tuple[str, ...]]  # (section, where written, address text, options)


def _bind_lines(lines: list[str], section: str, where: str) -> Iterator[Bind]:
    for line in lines:
        words = line.split()
        if len(words) >= 2 and words[0] == "bind":
            yield section, where, words[1], tuple(words[2:])


def sections_binds(config: SynapseConfig) -> Iterator[Bind]:
    """(HAProxy section, where it was written, the address text, its options) for every TCP
    bind."""
    hap = config.haproxy
    if hap is None:
        return
    for title, lines in hap.extra_sections.items():
        words = title.split()
        where = f"haproxy.extra_sections[{title!r}]"
        if len(words) >= 3 and words[0] in ("listen", "frontend"):
            yield title, where, words[2], ()  # HAProxy 1.x title: `listen NAME ADDR:PORT`
        yield from _bind_lines(lines, title, where)
    if hap.managed is not None and hap.managed.stats.enabled:
        stats = hap.managed.stats.bind  # its stats page
        yield "stats", "haproxy.managed.stats.bind", stats, ()
    yield from _bind_lines(hap.shared_frontend, _SHARED, "haproxy.shared_frontend")
    if hap.tls is not None and hap.config_file_path:  # (rendered only then: edge.py)
        tls = hap.tls
        address = f"{tls.bind_address or hap.bind_address}:{tls.port}"
        yield _SHARED, "haproxy.tls.port", address, ()
    for name, service in config.services.items():
        block = service.haproxy
        if block.disabled:
            continue
        where, section = f"services.{name}.haproxy", f"services.{name}"
        for key in ("frontend", "listen", "shared_frontend"):
            lines = getattr(block, key)
            if lines:  # (most services of an edge have none: SIGHUP runs this on all)
                owner = _SHARED if key == "shared_frontend" else section
                yield from _bind_lines(lines, owner, f"{where}.{key}")
        if block.port is not None:
            address = block.bind_address or hap.bind_address
            options = tuple((block.bind_options or "").split())
            yield section, f"{where}.port", f"{address}:{block.port}", options
            # zone signals: the frontend binds each arrival address on the same port too
            routing = service.zone_routing
            zone_where = f"services.{name}.zone_routing.zone_of_address"
            for address in sorted(routing.zone_of_address if routing else ()):
                host = f"[{address}]" if ":" in address else address
                yield section, zone_where, f"{host}:{block.port}", options


def binds(config: SynapseConfig) -> Iterator[tuple[str, str]]:
    """(where it was written, the address text) for every TCP bind in the config."""
    for _, where, text, _options in sections_binds(config):
        yield where, text


def _same_address(one: str, other: str) -> bool:
    """Whether binds on the two hosts take the same connections (by the text: no DNS).
    A wildcard meets every address (``::`` too: dual-stack unless ``v6only``, kept simple)."""
    if one in WILDCARDS or other in WILDCARDS:
        return True
    return bool(_LOCALHOST.get(one, {one}) & _LOCALHOST.get(other, {other}))


def _effect(one: tuple[str, str], other: tuple[str, str]) -> str:
    """What the kernel makes of two binds of one port (host, where): the more specific
    address wins its connections (measured), equal ones share them."""
    one_wild, other_wild = one[0] in WILDCARDS, other[0] in WILDCARDS
    if one_wild == other_wild:
        return "would split the connections between the two (SO_REUSEPORT)"
    host, where = other if one_wild else one
    return f"would bind both (SO_REUSEPORT): connections to {host} would reach {where} only"


def admin_port_clashes(config: SynapseConfig) -> list[str]:
    """One line per bind that takes the admin port on an overlapping address."""
    admin = config.admin
    if not admin.port:  # None: disabled; 0: a free port is picked
        return []
    clashes = []
    for where, text in binds(config):
        for host, low, high in endpoints(text):
            if low <= admin.port <= high and _same_address(admin.host, host):
                clashes.append(
                    f"admin.port {admin.port} (on {admin.host}) clashes with {where}: "
                    f"HAProxy binds {text}; set admin.port to a free port, or null to disable"
                )
    return clashes


def bind_clashes(config: SynapseConfig) -> list[str]:
    """One line per two sections binding the same port on the same address (or both on a
    wildcard): HAProxy binds both (SO_REUSEPORT) and the kernel splits the connections
    between them, so one service answers for another and a moved service's old port is
    refused. A config error."""
    return [line for line, split in _overlaps(config) if split]


def bind_shadows(config: SynapseConfig) -> list[str]:
    """One line per two sections binding the same port, one on a wildcard and one on a
    specific address: the specific one takes its address's connections, the wildcard the
    rest. Deterministic and sometimes meant (a stats page on 127.0.0.1 and another on
    every address), so a warning."""
    return [line for line, split in _overlaps(config) if not split]


def _overlaps(config: SynapseConfig) -> Iterator[tuple[str, bool]]:
    """(line, whether the connections are split) per two sections' overlapping binds.

    Binds of one section never clash (a frontend on 0.0.0.0 and its zone addresses, the
    services' lines of the shared frontend). A sweep over the binds sorted by port: each
    compared with the ones whose ports it can share, not with all (a thousand services)."""
    ends = sorted(  # (by port, then as written: the later bind is named, the earlier cited)
        (low, order, high, host, section, where, text)
        for order, (section, where, text, _) in enumerate(sections_binds(config))
        for host, low, high in endpoints(text)
    )
    open_: list[tuple[int, int, int, str, str, str, str]] = []  # the ranges reaching `low`
    for end in ends:
        low, _, _, host, section, where, text = end
        open_ = [seen for seen in open_ if seen[2] >= low]
        for _, _, _, seen_host, seen_section, seen_where, seen_text in open_:
            if seen_section != section and _same_address(host, seen_host):
                also = seen_where if seen_text == text else f"{seen_where} ({seen_text})"
                line = f"{where}: port {low} on {host or '*'} is also bound by {also}: HAProxy "
                yield (
                    line + _effect((host, where), (seen_host, seen_where)),
                    (host in WILDCARDS) == (seen_host in WILDCARDS),
                )
        open_.append(end)
