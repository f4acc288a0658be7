"""A server's host: an IP address, or a DNS name and what its server line needs for it.

HAProxy resolves a server's DNS name when it parses the config, and by default
(``init-addr last,libc``) a name that does not resolve fails the parse: one registration
whose host left DNS would make every candidate fail ``haproxy -c`` (every reload of every
service refused) and a restart from the file fail. ``DNS_INIT_ADDR`` adds ``none``: such a
server starts in maintenance instead, and ``last`` takes its address from the server-state
file first. Pure functions.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
IPV4 = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}", re.ASCII)  # as ipaddress accepts and prints it
DNS_INIT_ADDR = "init-addr last,libc,none"


def is_ip(host: str) -> bool:
    if IPV4.fullmatch(host):  # the common case, without building an address object
        return True
    if ":" not in host:
        return False
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def with_init_addr(own: str, default_server: Iterable[str]) -> str:
    """A DNS-named server's own options with ``DNS_INIT_ADDR`` added, unless they or the
    backend's ``default-server`` options set ``init-addr`` already (the operator's wins)."""
    if any("init-addr" in options.split() for options in (own, *default_server)):
        return own
    return f"{own} {DNS_INIT_ADDR}" if own else DNS_INIT_ADDR


def without_init_addr(tail: str) -> str:
    """A server line's options without the ``DNS_INIT_ADDR`` ``with_init_addr`` added."""
    if tail == DNS_INIT_ADDR:
        return ""
    return tail.removesuffix(f" {DNS_INIT_ADDR}")
