"""smartstack.etcd.EtcdConnection against closed ports and a real etcd."""

from __future__ import annotations

import asyncio

import aetcd
import pytest

from smartstack import etcd
from smartstack.etcd import EtcdConnection, prefix_fingerprint
from testbed.process import free_port


async def test_a_failed_authenticating_connect_closes_its_channel(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    created: list[aetcd.Client] = []
    closed: list[aetcd.Client] = []

    class Recording(etcd.Client):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)
            created.append(self)

        async def close(self) -> None:
            closed.append(self)
            await super().close()

    monkeypatch.setattr(etcd, "Client", Recording)
    dead = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    conn = EtcdConnection(dead, "root", "secret", timeout=2)
    for _ in range(3):  # an outage: every attempt authenticates against a closed port
        with pytest.raises(etcd.CONNECTION_ERRORS):
            await conn.with_client(lambda c: c.get(b"/x"))
    assert len(created) == 6 and closed == created


async def test_a_slow_call_on_a_live_endpoint_keeps_the_shared_client(etcd) -> None:
    """A timeout alone must not tear down the client that every watcher shares."""
    conn = EtcdConnection([etcd.endpoints[0], f"127.0.0.1:{free_port()}"], timeout=0.5, start=0)
    try:
        shared = await conn.client()

        async def slow(client: aetcd.Client) -> None:
            await asyncio.sleep(5)  # etcd is busy, or the range is huge

        results = await asyncio.gather(
            *(conn.with_client(slow) for _ in range(50)), return_exceptions=True
        )
        assert all(isinstance(r, TimeoutError) for r in results)
        assert conn.failovers == 0
        assert await conn.client() is shared
        await conn.with_client(lambda c: c.put(b"/still", b"works"))
    finally:
        await conn.close()


async def test_many_callers_failing_together_rotate_once(etcd) -> None:
    dead = f"127.0.0.1:{free_port()}"
    conn = EtcdConnection(
        [dead, etcd.endpoints[0]], timeout=5, start=0
    )  # (1 s: a loaded CI timed out)
    try:
        results = await asyncio.gather(
            *(conn.with_client(lambda c: c.get(b"/x")) for _ in range(30)),
            return_exceptions=True,
        )
        assert not any(isinstance(r, BaseException) for r in results), results
        assert conn.failovers == 1  # one failover for all 30, not one each
        assert conn.current_endpoint == etcd.endpoints[0]
    finally:
        await conn.close()


async def test_prefix_fingerprint_moves_with_every_kind_of_change(etcd) -> None:
    conn = EtcdConnection(etcd.endpoints, timeout=2)
    prefix = b"/fingerprint/"
    try:
        seen = [await conn.with_client(lambda c: prefix_fingerprint(c, prefix))]
        assert seen[0] == (0, 0)
        for change in (
            lambda c: c.put(prefix + b"a", b"1"),  # create
            lambda c: c.put(prefix + b"b", b"1"),  # another create
            lambda c: c.put(prefix + b"a", b"2"),  # update of an older key
            lambda c: c.delete(prefix + b"a"),  # delete of the newest key
            lambda c: c.put(b"/fingerprint-other", b"x"),  # outside the prefix: no move
        ):
            await conn.with_client(change)
            seen.append(await conn.with_client(lambda c: prefix_fingerprint(c, prefix)))
            # Batched (a transaction with another prefix's check): the same answer.
            both = await asyncio.gather(conn.fingerprint(prefix), conn.fingerprint(b"/none/"))
            assert both == [seen[-1], (0, 0)]
        assert len(set(seen[:-1])) == len(seen) - 1  # every change inside moved it
        assert seen[-1] == seen[-2]
        assert seen[-1][0] == 1
    finally:
        await conn.close()
