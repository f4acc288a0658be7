"""etcd over a lossy link, the watch side: the JSON gateway's status probe gives up its
member after two misses in a row, not one (a lost packet is not a stalled member: before,
each one cost every watch a relist), and a single-endpoint connection's move does not
name "the next" endpoint it never had. Fakes only."""

from __future__ import annotations

import asyncio
import logging

import pytest

from smartstack import etcd_json_probe, logs
from smartstack.etcd_events import Endpoints
from smartstack.etcd_http import Target
from smartstack.etcd_json_probe import WatchProbe

TARGET = Target("127.0.0.1", 1, None, {})


class Line:
    """A status line whose first ``lost`` calls get no answer (their packet lost)."""

    def __init__(self, lost: int) -> None:
        self.lost, self.calls = lost, 0

    async def post(self, target: Target, path: str, payload: dict) -> dict:
        self.calls += 1
        if self.calls <= self.lost:
            await asyncio.sleep(10)
        return {"header": {}}

    ask = post  # the name it had before (StatusLine.ask)

    async def close(self) -> None:
        return None


async def probed(monkeypatch: pytest.MonkeyPatch, lost: int) -> tuple[list[str], Line]:
    monkeypatch.setattr(etcd_json_probe, "PROBE_TIMEOUT", 0.05)
    silent: list[str] = []

    async def on_silent(reason: str, _turn: object) -> None:
        silent.append(reason)

    probe = WatchProbe(lambda: (TARGET, object()), on_silent, lambda: True)
    line = probe._line = Line(lost)  # type: ignore[assignment]
    await probe.probe()
    return silent, line


async def test_one_missed_probe_does_not_give_up_the_member(monkeypatch) -> None:
    silent, line = await probed(monkeypatch, lost=1)
    assert silent == [] and line.calls == 2  # asked again at once, answered


async def test_two_missed_probes_in_a_row_do(monkeypatch) -> None:
    silent, line = await probed(monkeypatch, lost=2)
    assert line.calls == 2 and len(silent) == 1 and "no answer" in silent[0], silent


def test_a_single_endpoint_is_reconnected_to_not_failed_over_to(caplog) -> None:
    caplog.set_level(logging.WARNING, logger="smartstack.etcd")
    Endpoints(["10.0.0.1:2379"], start=0)._next_endpoint("TimeoutError: no answer")
    Endpoints(["10.0.0.1:2379", "10.0.0.2:2379"], start=0)._next_endpoint("TimeoutError: x")
    single, cluster = (getattr(r, logs._FIELDS) for r in caplog.records)
    assert single.get("reconnect") == "10.0.0.1:2379" and "next" not in single, single
    assert cluster.get("next") == "10.0.0.2:2379" and "reconnect" not in cluster, cluster
