"""A lease a restart stop leaves (close without revoke) gets one last keep-alive, bounded:
the next nerve finds it with its whole TTL, not what the last renewal left. Fakes only."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from nerve.reporters.etcd_lease import LAST_KEEPALIVE, LeaseKeeper
from smartstack.etcd_json_client import EtcdJsonKVConnection, KeptAlive


def keeper(monkeypatch: pytest.MonkeyPatch, answer: bool) -> tuple[LeaseKeeper, list[int]]:
    conn = EtcdJsonKVConnection(["127.0.0.1:1"], timeout=1.0, start=0)
    sent: list[int] = []

    async def keepalive(_client: Any, lease_id: int) -> KeptAlive:
        sent.append(lease_id)
        if not answer:
            await asyncio.sleep(60)  # a registry that does not answer
        return KeptAlive(lease_id, 5)

    monkeypatch.setattr(conn, "keepalive", keepalive)
    kept = LeaseKeeper(conn, 5)
    kept.lease_id, kept.expires_at = 42, time.monotonic() + 1.0  # renewed 4 s ago
    return kept, sent


async def test_a_left_lease_is_renewed_once_before_the_exit(monkeypatch) -> None:
    kept, sent = keeper(monkeypatch, answer=True)
    await kept.close(revoke=False)
    assert sent == [42]


async def test_the_last_keepalive_never_holds_up_the_exit(monkeypatch) -> None:
    kept, sent = keeper(monkeypatch, answer=False)
    started = time.monotonic()
    await asyncio.wait_for(kept.close(revoke=False), 10)
    assert sent == [42]
    assert time.monotonic() - started < LAST_KEEPALIVE + 2  # (generous: a loaded host)
