"""smartstack.etcd_retire: a replaced client is closed when its last call ends."""

from __future__ import annotations

import asyncio

from smartstack import etcd_retire
from smartstack.etcd_retire import CallsInFlight


def recorder() -> tuple[CallsInFlight, list[str]]:
    closed: list[str] = []

    async def close(client: str) -> None:
        closed.append(client)

    return CallsInFlight(close), closed


async def test_a_client_without_calls_is_closed_at_once() -> None:
    calls, closed = recorder()
    with calls.running("a"):
        pass
    await calls.retire("a")
    assert closed == ["a"]


async def test_a_client_is_closed_when_its_last_call_ends() -> None:
    calls, closed = recorder()
    with calls.running("a"), calls.running("a"):
        await calls.retire("a")
        await asyncio.sleep(0)
        assert closed == [] and calls.calls_on("a") == 2
    for _ in range(3):
        await asyncio.sleep(0)
    assert closed == ["a"] and calls.calls_on("a") == 0


async def test_closing_the_connection_closes_every_replaced_client(monkeypatch) -> None:
    monkeypatch.setattr(etcd_retire, "CLOSE_AT_THE_LATEST", 30.0)
    calls, closed = recorder()
    with calls.running("a"), calls.running("b"):
        await calls.retire("a")
        await calls.retire("b")
        await asyncio.wait_for(calls.close_all(), 1)  # not the 30 s cap
        assert sorted(closed) == ["a", "b"]


async def test_a_call_that_never_ends_does_not_keep_its_client_open(monkeypatch) -> None:
    monkeypatch.setattr(etcd_retire, "CLOSE_AT_THE_LATEST", 0.05)
    calls, closed = recorder()
    with calls.running("a"):
        await calls.retire("a")
        await asyncio.sleep(0.2)
        assert closed == ["a"]
