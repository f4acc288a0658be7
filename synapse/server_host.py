"""The hosts a ``server`` line can carry, and the load-time check of configured ones.

The renderer skips a server whose host it cannot write ("host ... is not an address:
server skipped"), so a ``default_servers`` host it would skip means every request gets a
503 although ``synapse -k`` said ok. The same rule refuses it at load, with what was
probably meant (an ERB ``<%= ENV['BACKEND_HOST'] %>`` of an empty variable gives '').
Pure functions.
"""

from __future__ import annotations

import ipaddress
import re

from smartstack.config_check import idna_hint

# What the renderer writes on a server line (fullmatch, never `$`: it matches before "\n").
HOST = re.compile(r"[A-Za-z0-9_.:-]{1,253}", re.ASCII)
_PORT = re.compile(r"[0-9]{1,5}", re.ASCII)


def _is_ipv6(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).version == 6
    except ValueError:
        return False


def host_problem(host: str, resolved: bool = False) -> str | None:
    """Why ``host`` cannot serve (None: it can). ``resolved``: a name the dns watcher looks
    up (its addresses are what is rendered), so an IDN name is fine there."""
    if not host.strip():
        return (
            f"is empty ({host!r}): give the server's IP address or DNS name (an ERB "
            "<%= ENV[...] %> of a variable set to '' renders as '')"
        )
    if host != host.strip():
        return f"{host!r} has surrounding whitespace: did you mean {host.strip()!r}?"
    if host.startswith("[") and host.endswith("]") and _is_ipv6(host[1:-1]):
        return f"{host!r}: an IPv6 host is written without brackets: did you mean {host[1:-1]!r}?"
    name, colon, port = host.rpartition(":")
    if colon and _PORT.fullmatch(port) and name and not _is_ipv6(host):
        name = name[1:-1] if name.startswith("[") and name.endswith("]") else name
        return f"{host!r} looks like host:port: write host: {name!r} and port: {int(port)}"
    if "%" in host and _is_ipv6(host.partition("%")[0]):
        return (
            f"{host!r} is a scoped IPv6 address (%zone), which a HAProxy server line cannot "
            "carry: give a global or unique-local address"
        )
    if resolved and not host.isascii():
        return None  # (the resolver takes an IDN name as it is)
    if not HOST.fullmatch(host):
        hint = idna_hint(host)
        return (
            f"{host!r} is not an address HAProxy can use (letters, digits, '.', '-', '_', "
            f"':', at most 253 characters){hint}"
        )
    if ":" in host and not _is_ipv6(host):
        return f"{host!r} has a ':' but is not an IPv6 address"
    return None
