"""A ZooKeeper member that goes silent (packets dropped, no RST) while the session lives:
kazoo's retry must not spend the rest of the session on a connect whose SYNs are dropped.
And one name that resolves to a live member and to one that accepts and never answers: a
dropped connection must not spend the session on the silent one's handshake.

A name is resolved by an in-process stand-in for ``socket.getaddrinfo`` (no /etc/hosts
entry); its addresses are loopback relays to the real ZooKeeper (tests/helpers/blackhole.py).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator

import pytest
from blackhole import BlackholeRelay

from smartstack.zookeeper import ZooKeeperConnection
from testbed.zookeeper import ZooKeeperServer

SESSION_S = 16.0  # the server allows 2-20 ticks: a tick of 1 s
NAME = "zk-by-name.test"
States = list[tuple[float, str]]


@pytest.fixture(scope="module")
def zk_1s_tick(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ZooKeeperServer]:
    server = ZooKeeperServer(workdir=tmp_path_factory.mktemp("zk"), tick_time=1000).start()
    yield server
    server.stop()
    assert not server.alive


async def connected(hosts: str, session_s: float) -> tuple[ZooKeeperConnection, States]:
    """A connection to ``hosts`` tried in that order (not shuffled), connected, and its
    states as they come."""
    loop = asyncio.get_running_loop()
    conn = ZooKeeperConnection(hosts.split(","), loop, session_timeout=session_s)
    conn.client.set_hosts(hosts, randomize_hosts=False)
    states: States = []
    conn.add_listener(lambda state: states.append((time.monotonic(), state)))
    try:
        conn.start()
        await conn.wait_connected(10)
    except BaseException:
        await conn.close()
        raise
    return conn, states


async def states_after(states: States, since: float, wait_s: float) -> States:
    """The states after ``since`` (seconds after it), once connected again or the session
    lost, or after ``wait_s``."""
    deadline = since + wait_s
    while time.monotonic() < deadline and not any(
        s in ("lost", "new_session") or (s == "connected" and t > since) for t, s in states
    ):
        await asyncio.sleep(0.1)
    return [(round(t - since, 1), s) for t, s in states if t > since]


@pytest.mark.long
async def test_a_connect_to_a_member_dropping_syns_gives_up_in_time_to_keep_the_session(
    zk_1s_tick: ZooKeeperServer,
) -> None:
    upstream = zk_1s_tick.hosts
    # Members in this order, every one a path to the same server: the one we are on goes
    # silent; the next drops SYNs (the silent member again, as a retry lands on it); the
    # last one answers.
    with BlackholeRelay(upstream) as on, BlackholeRelay(upstream) as dropping, \
            BlackholeRelay(upstream) as good:  # fmt: skip
        dropping.silence(new="drop")
        order = [on.endpoint, dropping.endpoint, good.endpoint]
        conn, states = await connected(",".join(order), SESSION_S)
        try:
            session = conn.client.client_id[0]
            assert (on.accepted, good.accepted) == (1, 0)
            on.silence()
            silenced = time.monotonic()
            # The missed heartbeat comes within 2/3 of the session; the old connect then
            # waited the whole session on the dropping member.
            after = await states_after(states, silenced, 2 * SESSION_S)
            assert [s for _, s in after] == ["suspended", "connected"], after
            assert conn.client.client_id[0] == session
            assert good.accepted == 1
            # Given up on the dropping member after the cap, not after the session.
            suspended_at, connected_at = after[0][0], after[1][0]
            assert connected_at - suspended_at < 4.0, after  # the cap, 1.5 s, and a connect
        finally:
            await conn.close()


async def test_a_silent_address_of_a_name_does_not_cost_the_session(
    zk: ZooKeeperServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    session_s = 6.0  # within the shared server's 1-10 s (a tick of 0.5 s)
    with BlackholeRelay(zk.hosts) as live, BlackholeRelay(zk.hosts) as silent:
        silent.silence()  # accepts, never answers
        real = socket.getaddrinfo

        def getaddrinfo(host: str, port: object, *args: object, **kwargs: object) -> list:
            if host != NAME:
                return real(host, port, *args, **kwargs)  # type: ignore[arg-type]
            tcp = (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "")
            return [(*tcp, live.address), (*tcp, silent.address)]  # in this order

        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
        conn, states = await connected(f"{NAME}:2181", session_s)
        try:
            session = conn.client.client_id[0]
            assert (live.accepted, silent.accepted) == (1, 0)
            # The live connection breaks: kazoo goes on to the next address of the cycle,
            # the silent one, then back to the live one.
            conn.client._connection._socket.shutdown(socket.SHUT_RDWR)
            cut = time.monotonic()
            after = await states_after(states, cut, 3 * session_s)
            assert [s for _, s in after] == ["suspended", "connected"], after
            assert conn.client.client_id[0] == session
            assert (live.accepted, silent.accepted) == (2, 1)
            # Before: the handshake with the silent address waited the whole session (one
            # host as written): connected again after 6.1 s, the session's very end (it
            # expired whenever the last ping was longer ago than the server's rounding).
            assert after[1][0] < session_s / 3 + 1.5, after  # a third of it, then the live one
        finally:
            await conn.close()
