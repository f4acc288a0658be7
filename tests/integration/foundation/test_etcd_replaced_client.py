"""A failover replaces the shared gRPC client: the calls still running on the old one finish
there (a late keep-alive still renews the lease) instead of being cancelled and sent again
on a new connection; the old client is closed once they have ended."""

from __future__ import annotations

import asyncio

import aetcd
import pytest

from smartstack import etcd
from smartstack.etcd import EtcdConnection
from testbed.etcd import EtcdCluster


@pytest.fixture
def closed(monkeypatch: pytest.MonkeyPatch) -> list[aetcd.Client]:
    """The clients closed, in order."""
    seen: list[aetcd.Client] = []

    class Recording(etcd.Client):
        async def close(self) -> None:
            seen.append(self)
            await super().close()

    monkeypatch.setattr(etcd, "Client", Recording)
    return seen


async def test_a_call_in_flight_when_the_client_is_replaced_finishes_on_it(
    etcd: EtcdCluster, closed: list[aetcd.Client]
) -> None:
    # The same member twice: a rotation makes a new client (and channel) to it.
    conn = EtcdConnection([etcd.endpoints[0]] * 2, timeout=5, start=0)
    await conn.with_client(lambda c: c.put(b"/replaced/k", b"v"))
    used: list[aetcd.Client] = []

    async def get(client: aetcd.Client) -> object:
        used.append(client)
        return await client.get(b"/replaced/k")

    try:
        etcd.pause_member(0)  # the call hangs: a slow link's late answer
        try:
            call = asyncio.ensure_future(conn.with_client(get, probe=False))
            await asyncio.sleep(0.3)
            assert len(used) == 1
            await conn.rotate("test: another call failed over")  # as a timed-out audit does
            await asyncio.sleep(0.3)
            assert closed == [], "the replaced client was closed with a call running on it"
        finally:
            etcd.resume_member(0)
        kv = await asyncio.wait_for(call, 5)
        assert kv is not None and kv.value == b"v"
        assert len(used) == 1, "the call was cancelled and sent again on the new client"
        for _ in range(50):  # its last call over, the old client is closed
            if closed:
                break
            await asyncio.sleep(0.02)
        assert closed == [used[0]]
        assert await conn.client() is not used[0]
    finally:
        await conn.close()
    assert used[0] in closed and len(closed) == 2
