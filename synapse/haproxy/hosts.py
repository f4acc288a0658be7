"""A server's host: an IP address, or a DNS name and what its server line needs for it.

HAProxy resolves a server's DNS name when it parses the config, and by default
(``init-addr last,libc``) a name that does not resolve fails the parse: one registration
whose host left DNS would make every candidate fail ``haproxy -c`` (every reload of every
service refused) and a restart from the file fail; one whose resolver does not answer makes
every parse wait 20 s per name. So synapse looks the names up itself (``dns_addresses``)
and renders ``init-addr <address>``, or without an answer ``DNS_INIT_ADDR``: the
server-state file's address, else the server starts in maintenance. HAProxy never asks
DNS. Pure functions.
"""

from __future__ import annotations

import ipaddress
import re

_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
IPV4 = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}", re.ASCII)  # as ipaddress accepts and prints it
DNS_INIT_ADDR = "init-addr last,none"
# what ``added_init_addr`` adds (``last,libc,none``: before synapse looked names up itself)
_ADDED = re.compile(r"(?:^| )init-addr (?:last,none|last,libc,none|[0-9A-Fa-f.:]+)$")


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


def added_init_addr(own: str, address: str | None) -> str:
    """A DNS-named server's own options with ``init-addr <address>`` (synapse's lookup) or
    ``DNS_INIT_ADDR`` added; for options and ``default-server`` lines that set no
    ``init-addr`` (the operator's wins: the renderer's traits say so, ``address_by``)."""
    added = f"init-addr {address}" if address else DNS_INIT_ADDR
    return f"{own} {added}" if own else added


def without_init_addr(tail: str) -> str:
    """A server line's options without the ``init-addr`` ``added_init_addr`` added."""
    return _ADDED.sub("", tail)


# a `show servers state` row whose srv_addr is "-": a server without an address (a DNS name
# with no answer yet: `init-addr last,none`), in maintenance and DOWN
_UNADDRESSED = re.compile(r"^\d+ \S+ \d+ \S+ - .*\n?", re.MULTILINE)


def without_unaddressed(dump: str) -> str:
    """A servers-state dump without the rows of servers that have no address. Loaded by
    the next worker, such a row made the server DOWN there even once the name had an
    address (`init-addr <address>`): a server without health checks never came back up."""
    return _UNADDRESSED.sub("", dump) if " - " in dump else dump
