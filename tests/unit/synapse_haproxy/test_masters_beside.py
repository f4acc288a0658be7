"""Masters left beside the one a restarted synapse adopts (``adoption.beside``), and a
replacement a stop does not cut short (``replacement.finish``)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from synapse.haproxy import adoption
from synapse.haproxy.replacement import finish

CONFIG, SOCKET = Path("/run/s/haproxy.cfg"), Path("/run/s/haproxy-master.sock")


def test_only_ours_or_a_gone_synapses_masters_are_beside(monkeypatch, caplog) -> None:
    """10: ours (our socket); 12: under another socket, its synapse gone; 13: another live
    synapse's (never taken); 14: being retired already; 11: the adopted one."""
    found_by = {SOCKET: (10, 11), None: (10, 11, 12, 13, 14)}
    monkeypatch.setattr(adoption, "running_masters", lambda config, socket: found_by[socket])
    with caplog.at_level(logging.WARNING, logger="synapse.haproxy.managed"):
        found = adoption.beside(CONFIG, SOCKET, 11, lambda pid: pid in (12, 14), {14})
    assert found == (10, 12)
    [record] = caplog.records
    assert record.message == "haproxy_masters_beside"
    assert record.smartstack_fields["masters"] == [10, 12]  # type: ignore[attr-defined]


def test_the_adopted_master_alone_is_not_said(monkeypatch, caplog) -> None:
    monkeypatch.setattr(adoption, "running_masters", lambda config, socket: (11,))
    with caplog.at_level(logging.DEBUG, logger="synapse.haproxy.managed"):
        assert adoption.beside(CONFIG, SOCKET, 11, lambda pid: True, ()) == ()
    assert caplog.records == []


async def test_a_cancelled_caller_waits_for_the_replacement_then_is_cancelled() -> None:
    ended: list[str] = []

    async def replacement() -> int:
        await asyncio.sleep(0.2)
        ended.append("retired the old master")
        return 7

    caller = asyncio.create_task(finish(asyncio.create_task(replacement())))
    await asyncio.sleep(0.05)
    caller.cancel()
    await asyncio.sleep(0.01)
    caller.cancel()  # (cancel_and_wait cancels again after a while)
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert ended == ["retired the old master"]  # (before: cut short, the old master kept)


async def test_a_failed_replacement_cancelled_meanwhile_is_a_cancellation() -> None:
    async def replacement() -> int:
        await asyncio.sleep(0.05)
        raise RuntimeError("its start failed")

    caller = asyncio.create_task(finish(asyncio.create_task(replacement())))
    await asyncio.sleep(0.01)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller


async def test_its_result_or_error_otherwise() -> None:
    async def value() -> int:
        return 7

    async def error() -> int:
        raise RuntimeError("its start failed")

    assert await finish(asyncio.create_task(value())) == 7
    with pytest.raises(RuntimeError):
        await finish(asyncio.create_task(error()))
