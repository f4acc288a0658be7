"""Registry addresses as a config gives them: ZooKeeper hosts and etcd endpoints.

Checked when the file is loaded (``-k``, start, SIGHUP), as the clients will read them: a
typo kazoo cannot parse ('127.0.0.1:2181,', '127.0.0.1: 2181', 'localhost:2l81') passed
and a SIGHUP applied it; nerve then withdrew a healthy instance and synapse's watcher
crash-looped with the service frozen (review s21). Now it is one line naming file, key,
value and what was expected, and a SIGHUP with it keeps the running config.

ZooKeeper: ``host``, ``host:port`` (kazoo's and the Ruby zk gem's default port: 2181),
``[v6]:port``, several in one entry as a connection string (``zk1:2181,zk2:2181``), and a
chroot after the last host (``zk3:2181/smartstack``, kazoo's connection string
``h1:p1,h2:p2/chroot``). etcd: the same with an optional ``http://`` or
``https://`` and a final ``/``, default port 2379.
"""

from __future__ import annotations

import ipaddress
import posixpath
import re

from smartstack.record import InvalidRecord, validate_host

ZK_DEFAULT_PORT = 2181
ETCD_DEFAULT_PORT = 2379
_CHROOT = re.compile(r"(?:/[^/,\s]+)+")


def split_host_port(text: str, default_port: int) -> tuple[str, int]:
    """'host', 'host:port', '[v6]' or '[v6]:port' -> (host, port); ValueError saying what
    is wrong with it."""
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError("an IPv6 address is written '[::1]:port'")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{host!r} in brackets is not an IPv6 address") from None
        port_text = rest[1:] if rest else None
    elif ":" in text:
        host, _, port_text = text.rpartition(":")
        if "," in text:
            raise ValueError("a ',' in it: one host:port per list entry")
        if ":" in host:  # (kazoo's parser would take 'fe80::1:2181' apart wrongly)
            raise ValueError("an IPv6 address goes in brackets: '[::1]:port'")
    else:
        host, port_text = text, None
    if port_text is None:
        port = default_port
    elif port_text.isascii() and port_text.isdigit():
        port = int(port_text)
        if not 1 <= port <= 65535:
            raise ValueError(f"port {port} is outside 1-65535")
    else:
        raise ValueError(f"port {port_text!r}")
    try:
        validate_host(host)
    except InvalidRecord as exc:
        raise ValueError(exc.reason) from None
    return host, port


def is_ip_address(text: str) -> bool:
    """Whether ``text`` is an IPv4 or IPv6 address (not a name)."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def join_host_port(host: str, port: int) -> str:
    """The endpoint of the Airbnb form's ``host`` and ``port`` keys ('[::1]:4003')."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def etcd_endpoint(endpoint: str) -> tuple[str, int]:
    """'host:port' or 'http(s)://host:port' (a final '/' allowed) -> (host, port);
    ValueError saying what is wrong with it."""
    scheme, sep, rest = endpoint.partition("://")
    if not sep:
        if re.match(r"https?:?/", endpoint):
            raise ValueError("a scheme is written 'http://' or 'https://'")
        rest = endpoint
    elif scheme not in ("http", "https"):
        raise ValueError(f"scheme {scheme!r} (http:// or https://)")
    rest = rest[:-1] if rest.endswith("/") else rest
    if "/" in rest:
        raise ValueError(f"a path ({rest[rest.index('/') :]!r}) after the address")
    return split_host_port(rest, ETCD_DEFAULT_PORT)


def check_zk_hosts(hosts: list[str], key: str) -> None:
    """ValueError naming ``key[i]`` for the first entry kazoo would refuse or misread."""
    chroots = []
    for index, entry in enumerate(hosts):
        address, slash, chroot = entry.partition("/")
        try:
            if not address:
                raise ValueError("a chroot goes after the last host: 'zk3:2181/chroot'")
            # One entry may be a connection string of several ('zk1:2181,zk2:2181'): kazoo
            # and Ruby's synapse (hosts joined with ',') both read it.
            for part in address.split(","):
                if not part.strip():
                    raise ValueError("an empty host: a ',' too many")
                split_host_port(part.lstrip(), ZK_DEFAULT_PORT)  # (as kazoo reads it)
            if slash and not _CHROOT.fullmatch(slash + chroot):
                raise ValueError(f"chroot {slash + chroot!r}: a chroot is '/name'")
        except ValueError as exc:
            raise ValueError(f"{key}[{index}]: {entry!r} is not host:port ({exc})") from None
        if slash:
            chroots.append((index, entry))
    if len(chroots) > 1:
        raise ValueError(f"{key}: one chroot at most (in {chroots[0][1]!r}, {chroots[1][1]!r})")
    # The daemons join the hosts sorted ('h1:p1,h2:p2/chroot'): kazoo reads a chroot only
    # at the end of that string.
    if chroots and max(hosts) != chroots[0][1]:
        index, entry = chroots[0]
        last = max(h for h in hosts if h != entry)
        raise ValueError(
            f"{key}[{index}]: {entry!r}: the chroot must be on the host that sorts last, "
            f"{last!r} (the hosts are joined in sorted order)"
        )


def check_etcd_endpoints(endpoints: list[str], key: str) -> None:
    """ValueError naming ``key[i]`` for the first endpoint that is not an address."""
    for index, endpoint in enumerate(endpoints):
        try:
            etcd_endpoint(endpoint)
        except ValueError as exc:
            raise ValueError(
                f"{key}[{index}]: {endpoint!r} is not host:port or http(s)://host:port ({exc})"
            ) from None


def check_etcd_host(host: str, key: str) -> None:
    """The Airbnb form (``host`` and ``port`` keys): ``host`` must be a host alone."""
    try:
        validate_host(host)
    except InvalidRecord as exc:
        hint = " (the port goes in its own key)" if ":" in host else ""
        raise ValueError(f"{key}: {exc.reason}{hint}") from None


def zk_path_problem(path: str) -> str | None:
    """Why ``path`` is no ZooKeeper path to use (None: fine): kazoo refuses ``.``/``..``
    components only once running ("relative paths not allowed", retried for ever, or a
    watcher crash loop); surrounding whitespace names another znode than the one meant."""
    parts = path.split("/")
    if path != path.strip() or any(part in (".", "..") for part in parts):
        normal = posixpath.normpath(path.strip()) if path.strip() else "/"
        normal = "/" + normal.lstrip("/")  # (normpath keeps a leading '//')
        return (
            f"{path!r} is not a ZooKeeper path it can use ('.' and '..' components and "
            f"surrounding whitespace are not allowed): did you mean {normal!r}?"
        )
    return None
