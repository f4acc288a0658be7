"""An etcd endpoint given by name on the JSON gateway (smartstack.tcp_connect), against real
etcd: a dead first address, a name that stops resolving, a timeout that says where.

The name is resolved by an in-process stand-in for ``socket.getaddrinfo`` (no /etc/hosts
entry): its addresses are loopback ports, so one name can lead to a dead relay and to etcd.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable

import pytest
from blackhole import BlackholeRelay

from smartstack import tcp_connect
from smartstack.etcd_json import EtcdJsonConnection
from smartstack.etcd_json_client import EtcdJsonKVConnection
from testbed.etcd import EtcdCluster

NAME = "etcd-by-name.test"
Resolve = Callable[[list[tuple[str, int]] | None], None]


@pytest.fixture
def resolve(monkeypatch: pytest.MonkeyPatch) -> Resolve:
    """``resolve([(ip, port), ...])``: what NAME resolves to from now on (None: no such
    name); any other name resolves as usual."""
    real = socket.getaddrinfo
    answer: list[list[tuple[str, int]] | None] = [None]

    def getaddrinfo(host: str, port: object, *args: object, **kwargs: object) -> list:
        if host != NAME:
            return real(host, port, *args, **kwargs)  # type: ignore[arg-type]
        if answer[0] is None:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        tcp = (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "")
        return [(*tcp, address) for address in answer[0]]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(tcp_connect, "_resolved", {})
    monkeypatch.setattr(tcp_connect, "_streaks", {})
    return lambda addresses: answer.__setitem__(0, addresses)


def events(caplog: pytest.LogCaptureFixture, name: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == name]


async def test_a_dead_first_address_of_the_name_is_passed_over(
    etcd: EtcdCluster, resolve: Resolve
) -> None:
    with BlackholeRelay(etcd.endpoints[0]) as dead:
        dead.silence(new="drop")  # SYNs dropped: a host gone
        resolve([dead.address, (etcd.host, etcd.port)])
        conn = EtcdJsonConnection([f"{NAME}:2379"], timeout=2)
        try:
            started = time.monotonic()
            await conn.list_prefix(b"/by-name/", 5)  # before: TimeoutError, every time
            first = time.monotonic() - started
            started = time.monotonic()
            await conn.list_prefix(b"/by-name/", 5)
            second = time.monotonic() - started
        finally:
            await conn.close()
    assert first < 1.5, first  # the next address after 0.25 s, not the call's timeout
    assert second < 1.5, second
    # The live one goes first from now on (no 0.25 s wait per call).
    assert tcp_connect._resolved[(NAME, 2379)][0][3] == (etcd.host, etcd.port)
    assert conn.failovers == 0


async def test_an_endpoint_that_drops_syns_is_left_after_the_connect_timeout(
    etcd: EtcdCluster,
) -> None:
    """Two endpoints, the first a host gone (SYNs dropped): the listing moves on after
    CONNECT_TIMEOUT_S, not after its own 20 s (a sidecar synapse served 37 s late)."""
    with BlackholeRelay(etcd.endpoints[0]) as dead:
        dead.silence(new="drop")
        conn = EtcdJsonConnection([dead.endpoint, etcd.endpoints[0]], timeout=20, start=0)
        try:
            started = time.monotonic()
            await asyncio.wait_for(conn.list_prefix(b"/by-name/", 20), 30)
            took = time.monotonic() - started
        finally:
            await conn.close()
    assert took < tcp_connect.CONNECT_TIMEOUT_S + 3, took
    assert conn.failovers == 1


async def test_a_name_that_stops_resolving_keeps_its_last_addresses(
    etcd: EtcdCluster, resolve: Resolve, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    resolve([(etcd.host, etcd.port)])
    conn = EtcdJsonKVConnection([f"{NAME}:2379"], timeout=2)
    try:
        granted = await conn.with_client(lambda client: client.lease(10))
        resolve(None)  # a resolver outage; etcd is up
        for _ in range(3):  # nerve's keep-alives: before, gaierror (the lease ran out)
            kept = await conn.with_client(lambda client: conn.keepalive(client, granted.id))
            assert kept.TTL > 0
            # (keep-alives share one kept connection: a grant opens a connection of its own)
            assert (await conn.with_client(lambda client: client.lease(10))).ttl > 0
        resolve([(etcd.host, etcd.port)])
        await conn.with_client(lambda client: client.lease(10))
    finally:
        await conn.close()
    lost = events(caplog, "endpoint_name_unresolved")
    assert len(lost) == 1  # once per streak
    assert lost[0].smartstack_fields["addresses"] == etcd.host  # type: ignore[attr-defined]
    back = events(caplog, "endpoint_name_resolved")
    # every connection opened in the outage looked the name up and failed: the three grants
    # and the keep-alives' one
    assert [r.smartstack_fields["failures"] for r in back] == [4]  # type: ignore[attr-defined]
    assert conn.failovers == 0


async def test_a_name_never_resolved_still_fails(resolve: Resolve) -> None:
    conn = EtcdJsonConnection([f"{NAME}:2379"], timeout=2)
    with pytest.raises(socket.gaierror):
        await conn.list_prefix(b"/by-name/", 5)


async def test_a_timeout_names_the_endpoint_and_its_addresses(
    etcd: EtcdCluster, resolve: Resolve
) -> None:
    with BlackholeRelay(etcd.endpoints[0]) as dead:
        dead.silence(new="drop")
        resolve([dead.address])
        conn = EtcdJsonConnection([f"{NAME}:2379"], timeout=1)
        with pytest.raises(TimeoutError) as raised:
            await asyncio.wait_for(conn.list_prefix(b"/by-name/", 1), 10)
    # before: "TimeoutError: " and nothing else, in the logs and synapse's status
    assert str(raised.value) == f"no answer from {NAME}:2379 (127.0.0.1) in 1 s"


async def test_a_resolver_that_hangs_leaves_the_keepalive_its_time(
    etcd: EtcdCluster, resolve: Resolve, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A resolver that does not answer (glibc gives up after 5 s per try) while etcd is up:
    the addresses kept are used after LOOKUP_WAIT_S, inside a keep-alive's 3 s (before, every
    keep-alive timed out in the lookup and the lease ran out)."""
    resolve([(etcd.host, etcd.port)])
    conn = EtcdJsonKVConnection([f"{NAME}:2379"], timeout=3)
    try:
        granted = await conn.with_client(lambda client: client.lease(10))

        def hanging(*_args: object, **_kwargs: object) -> list:
            time.sleep(5)
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

        monkeypatch.setattr(socket, "getaddrinfo", hanging)
        kept = await conn.with_client(lambda client: conn.keepalive(client, granted.id))
    finally:
        await conn.close()
    assert kept.TTL > 0
    assert conn.failovers == 0
