"""A ZooKeeper member that goes silent (packets dropped, no RST) while the session lives:
kazoo's retry must not spend the rest of the session on a connect whose SYNs are dropped."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from blackhole import BlackholeRelay

from smartstack.zookeeper import ZooKeeperConnection
from testbed.zookeeper import ZooKeeperServer

SESSION_S = 16.0  # the server allows 2-20 ticks: a tick of 1 s


@pytest.fixture(scope="module")
def zk_1s_tick(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ZooKeeperServer]:
    server = ZooKeeperServer(workdir=tmp_path_factory.mktemp("zk"), tick_time=1000).start()
    yield server
    server.stop()
    assert not server.alive


async def test_a_connect_to_a_member_dropping_syns_gives_up_in_time_to_keep_the_session(
    zk_1s_tick: ZooKeeperServer,
) -> None:
    loop = asyncio.get_running_loop()
    upstream = zk_1s_tick.hosts
    # Members in this order, every one a path to the same server: the one we are on goes
    # silent; the next drops SYNs (the silent member again, as a retry lands on it); the
    # last one answers.
    with BlackholeRelay(upstream) as on, BlackholeRelay(upstream) as dropping, \
            BlackholeRelay(upstream) as good:  # fmt: skip
        dropping.silence(new="drop")
        order = [on.endpoint, dropping.endpoint, good.endpoint]
        conn = ZooKeeperConnection(order, loop, session_timeout=SESSION_S)
        conn.client.set_hosts(",".join(order), randomize_hosts=False)
        states: list[tuple[float, str]] = []
        conn.add_listener(lambda state: states.append((time.monotonic(), state)))
        try:
            conn.start()
            await conn.wait_connected(10)
            session = conn.client.client_id[0]
            assert (on.accepted, good.accepted) == (1, 0)
            on.silence()
            silenced = time.monotonic()
            # The missed heartbeat comes within 2/3 of the session; the old connect then
            # waited the whole session on the dropping member.
            deadline = silenced + 2 * SESSION_S
            while time.monotonic() < deadline and not any(
                s in ("lost", "new_session") or (s == "connected" and t > silenced)
                for t, s in states
            ):
                await asyncio.sleep(0.1)
            after = [(round(t - silenced, 1), s) for t, s in states if t > silenced]
            assert [s for _, s in after] == ["suspended", "connected"], after
            assert conn.client.client_id[0] == session
            assert good.accepted == 1
            # Given up on the dropping member after the cap, not after the session.
            suspended_at, connected_at = after[0][0], after[1][0]
            assert connected_at - suspended_at < 4.0, after  # the cap, 1.5 s, and a connect
        finally:
            await conn.close()
