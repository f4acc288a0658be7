"""Bind addresses that are not on this host, found before our HAProxy tries to bind them.

`haproxy -c` binds nothing, so a service whose ``bind_address`` (or a ``bind`` line) is an
address this host does not have (an edge LB's VIP that keepalived has not added yet, a
typo) passed the check, and then the start failed ("cannot bind socket (Cannot assign
requested address)") for every service, or each reload failed after pausing the old
worker's frontends while HAProxy retried the bind. Now a test bind of a socket to
(address, 0) says it at once (EADDRNOTAVAIL, no reload), and such a bind is a ``Clash``
as a taken port is (``port_taken``): its service is left out, the others are applied, and
every PORT_RECHECK_S the address is looked for again; once it is here the service comes in.

Never flagged: wildcards (HAProxy binds every address), binds with ``transparent`` (the
kernel lets them bind any address), ``namespace`` or ``interface`` (looked for elsewhere
than in our network namespace), any bind while the host's
``net.ipv4.ip_nonlocal_bind`` (``net.ipv6.`` for IPv6) is 1, and an address our HAProxy
listens on already (removed since: a reload hands the socket over, it is not bound again).
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from synapse.haproxy import ports

if TYPE_CHECKING:
    from synapse.config import SynapseConfig

# `transparent`: the kernel lets it bind any address; `namespace` / `interface`: the
# address is looked for in another network namespace or VRF than ours (review s31: a
# `namespace` bind was left out for ever, an extra section's kept HAProxy from starting).
ANY_ADDRESS_OPTIONS = ("transparent", "namespace", "interface")


def try_bind(ip: str) -> None:
    """Bind a socket to (``ip``, 0); raises OSError as HAProxy's bind would fail."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((ip, 0))


def nonlocal_bind(version: int) -> bool:
    """The host lets any address be bound (``net.ipv{4,6}.ip_nonlocal_bind`` = 1)."""
    try:
        return Path(f"/proc/sys/net/ipv{version}/ip_nonlocal_bind").read_text().strip() == "1"
    except OSError:
        return False


def is_here(ip: str, bind: Callable[[str], None] = try_bind) -> bool:
    """False only when a bind to ``ip`` fails with EADDRNOTAVAIL (other errors: HAProxy's
    own check or bind reports them)."""
    try:
        bind(ip)
    except OSError as err:
        return err.errno != errno.EADDRNOTAVAIL
    return True


def missing(
    config_text: str,
    bind: Callable[[str], None] = try_bind,
    nonlocal_allowed: Callable[[int], bool] = nonlocal_bind,
    listening: Callable[[], Iterable[tuple[str, int, str]]] = ports.listeners,
) -> list[ports.Clash]:
    """One ``Clash`` per bind address and port of ``config_text`` this host does not have."""
    gone: dict[str, str | None] = {}  # host -> its missing address (a thousand frontends
    # bind one address: one test each)
    allowed: dict[int, bool] = {}

    def allowed_once(version: int) -> bool:
        if version not in allowed:
            allowed[version] = nonlocal_allowed(version)
        return allowed[version]

    found: dict[tuple[str, int], ports.Clash] = {}
    for written, host, port_list, options in ports.bind_items(config_text):
        if not port_list or any(option in ANY_ADDRESS_OPTIONS for option in options):
            continue
        if host not in gone:
            gone[host] = _gone(host, bind, allowed_once)
        if (ip := gone[host]) is not None:
            for port in port_list:
                found.setdefault((written, port), ports.Clash(written, port, (), (), ip))
    if found:  # HAProxy may hold it from before the address went: handed over at a reload
        held = {(ip, port) for ip, port, _inode in listening()}
        found = {k: c for k, c in found.items() if (c.missing, c.port) not in held}
    return list(found.values())


def config_notes(
    config: SynapseConfig,
    bind: Callable[[str], None] = try_bind,
    nonlocal_allowed: Callable[[int], bool] = nonlocal_bind,
) -> list[str]:
    """``synapse -k``'s notes, one per bind of ``config`` on an address this host does not
    have, naming its key and what a start does with it. Notes, not errors: the address may
    be added later (a VIP), and a standby LB runs without it."""
    from synapse.port_clash import WILDCARDS, endpoints, sections_binds

    hap = config.haproxy
    managed = hap is not None and hap.managed is not None
    notes = []
    for _section, where, text, options in sections_binds(config):
        if any(option in ANY_ADDRESS_OPTIONS for option in options):
            continue
        for host in dict.fromkeys(host for host, _low, _high in endpoints(text)):
            if host in WILDCARDS:
                continue
            if (ip := _gone(host, bind, nonlocal_allowed)) is None:
                continue
            key, service = _key(config, where)
            said = f"{key}: {ip} is not an address on this host: HAProxy cannot bind {text}"
            if not managed:
                notes.append(f"{said} (its reload or start fails until it is)")
            elif service is not None:
                notes.append(
                    f"{said}; synapse leaves service {service} out of HAProxy (the others are "
                    f"served) and adds it once the address is here (looked for every "
                    f"{ports.PORT_RECHECK_S:g} s, e.g. a VIP keepalived adds; no SIGHUP needed)"
                )
            else:
                notes.append(
                    f"{said}; WARNING: not a service's bind, so synapse does not start HAProxy "
                    "(nor reload it: a running one keeps its config) until the address is here; "
                    "the start is retried with a backoff"
                )
    return notes


def _gone(
    host: str, bind: Callable[[str], None], nonlocal_allowed: Callable[[int], bool]
) -> str | None:
    """The address of ``host`` this host does not have; None when one of its addresses is
    here (a name such as localhost: HAProxy binds one of them) or it does not resolve."""
    ips = sorted(ports.resolve(host))
    for ip in ips:
        address = ipaddress.ip_address(ip.partition("%")[0])
        if address.is_unspecified or nonlocal_allowed(address.version) or is_here(ip, bind):
            return None
    return ips[0] if ips else None


def _key(config: SynapseConfig, where: str) -> tuple[str, str | None]:
    """(the config key that wrote the bind, its service: None when not a service's)."""
    if not where.startswith("services."):
        return where, None
    name = where.split(".")[1]
    if where.endswith(".haproxy.port"):  # the address is the service's bind_address
        own = config.services[name].haproxy.bind_address
        where = f"services.{name}.haproxy.bind_address" if own else "haproxy.bind_address"
    return where, name
