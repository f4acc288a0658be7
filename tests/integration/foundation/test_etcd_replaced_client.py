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
    # The same member twice: a rotation makes a new client (and channel) to it. A long
    # timeout: the call must still hang at the rotation, also when a loaded machine stalls
    # this process for seconds (CI s48: with 5 s the call had ended, its client closed).
    conn = EtcdConnection([etcd.endpoints[0]] * 2, timeout=30, start=0)
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
            assert conn._calls.calls_on(used[0]) == 1, "the call ended before the rotation"
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


async def outcome(call: asyncio.Future) -> str:
    """How a caller's call ended: "ok", or the exception's name (CancelledError too)."""
    try:
        await call
    except asyncio.CancelledError:
        return "CancelledError"
    except Exception as exc:
        return type(exc).__name__
    return "ok"


async def test_a_call_timing_out_on_a_replaced_client_moves_on_instead_of_dying(
    etcd_cluster: EtcdCluster,
) -> None:
    """Its member silent (SIGSTOP): a keep-alive times out first and rotates; a read that
    started on the same client then times out there. Its status probe of the replaced
    client was cancelled when that client closed (its last call over), and the
    CancelledError ended the caller's task: a nerve reporter that never wrote again."""
    conn = EtcdConnection(list(etcd_cluster.endpoints), timeout=1.0, start=0)
    await conn.with_client(lambda c: c.put(b"/retired/k", b"v"))
    get = lambda c: c.get(b"/retired/k")  # noqa: E731
    etcd_cluster.pause_member(0)
    try:
        keepalive = asyncio.ensure_future(conn.with_client(get, timeout=1.0, probe=False))
        await asyncio.sleep(0.2)
        read = asyncio.ensure_future(conn.with_client(get, timeout=0.9))
        assert await outcome(keepalive) == "ok"  # on the next member
        assert await outcome(read) == "ok"
    finally:
        etcd_cluster.resume_member(0)
        await conn.close()


async def test_a_watch_creation_probing_the_client_survives_another_callers_failover(
    etcd_cluster: EtcdCluster,
) -> None:
    """synapse's watchers share one client: a watch creation times out on a silent member
    and probes it; meanwhile another watcher's listing meets its deadline and rotates. The
    client closed under the probe, and the CancelledError ended the watcher's task: its
    service frozen on its last list, without a log line, until a restart."""
    conn = EtcdConnection(list(etcd_cluster.endpoints), timeout=1.0, start=0)
    await conn.list_prefix(b"/retired/", 5)  # the client, on member 0
    etcd_cluster.pause_member(0)
    try:
        watch = asyncio.ensure_future(conn.watch_prefix(b"/retired/x/", 1))
        await asyncio.sleep(0.5)
        listing = asyncio.ensure_future(conn.list_prefix(b"/retired/y/", 3))
        assert await outcome(watch) != "CancelledError"
        await outcome(listing)
    finally:
        etcd_cluster.resume_member(0)
        await conn.close()
