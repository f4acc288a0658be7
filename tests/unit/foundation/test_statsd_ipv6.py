"""statsd's client resolves IPv4 only unless told: an IPv6 host ('::1', a name with only
AAAA records) was `statsd_unavailable` for good, no figure ever sent (IPv6 review)."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from smartstack.statsd import StatsdConfig, StatsdStats


class Clients:
    """A StatsClient constructor: ``v6`` names resolve only as IPv6, ``v4`` only as IPv4."""

    def __init__(self, v6: set[str], v4: set[str]) -> None:
        self.v6, self.v4, self.made = v6, v4, []

    def __call__(self, host: str, port: int, prefix: str, ipv6: bool = False) -> Any:
        if host not in (self.v6 if ipv6 else self.v4):
            raise socket.gaierror(
                socket.EAI_ADDRFAMILY, "Address family for hostname not supported"
            )
        self.made.append((host, ipv6))
        return object()


def stats_with(clients: Clients, host: str) -> StatsdStats:
    stats = object.__new__(StatsdStats)  # (no lookup thread: _build alone)
    stats.config, stats._prefix, stats._make_client = StatsdConfig(host=host), "p", clients
    return stats


def test_an_ipv6_host_gets_an_ipv6_client_and_an_ipv4_one_stays_ipv4() -> None:
    clients = Clients(v6={"::1", "v6only.test"}, v4={"127.0.0.1"})
    for host in ("::1", "v6only.test", "127.0.0.1"):
        stats_with(clients, host)._build()
    assert clients.made == [("::1", True), ("v6only.test", True), ("127.0.0.1", False)]


def test_a_host_that_resolves_in_neither_family_says_the_ipv4_error() -> None:
    with pytest.raises(socket.gaierror, match="Address family"):
        stats_with(Clients(v6=set(), v4=set()), "nowhere.test")._build()
