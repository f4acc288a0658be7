"""etcd over a lossy link, the watch side: the JSON gateway's status probe waits two
PROBE_TIMEOUTs for its member's answer, not one (a lost packet is not a stalled member:
before, each one cost every watch a relist); the member is kept only by an answer on the
kept connection (open flows frozen while new ones pass must still leave it); a
single-endpoint connection's move does not name "the next" endpoint it never had. Fakes
only."""

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
    """A status line whose calls are answered after the given delays (seconds; None: never,
    a frozen flow), the last delay for any further call."""

    def __init__(self, *delays: float | None) -> None:
        self.delays, self.calls = delays, 0

    async def post(self, target: Target, path: str, payload: dict) -> dict:
        delay = self.delays[min(self.calls, len(self.delays) - 1)]
        self.calls += 1
        await asyncio.sleep(3600 if delay is None else delay)
        return {"header": {}}

    ask = post  # the name it had before (StatusLine.ask)

    async def close(self) -> None:
        return None


async def probed(monkeypatch: pytest.MonkeyPatch, *delays: float | None) -> tuple[list[str], Line]:
    monkeypatch.setattr(etcd_json_probe, "PROBE_TIMEOUT", 0.2)
    silent: list[str] = []

    async def on_silent(reason: str, _turn: object) -> None:
        silent.append(reason)

    probe = WatchProbe(lambda: (TARGET, object()), on_silent, lambda: True)
    line = probe._line = Line(*delays)  # type: ignore[assignment]
    await probe.probe()
    return silent, line


async def test_a_late_answer_does_not_give_up_the_member(monkeypatch) -> None:
    silent, line = await probed(monkeypatch, 0.3, 0.0)  # its packet sent again: 1.5 windows
    assert silent == [] and line.calls == 2, silent  # a second call went beside it


async def test_no_answer_in_two_windows_does(monkeypatch) -> None:
    silent, line = await probed(monkeypatch, None, None)
    assert line.calls == 2 and len(silent) == 1 and "no answer" in silent[0], silent


async def test_a_frozen_kept_connection_does_though_new_connections_are_answered(
    monkeypatch,
) -> None:
    silent, line = await probed(monkeypatch, None, 0.0)
    assert line.calls == 2 and len(silent) == 1 and "kept one" in silent[0], silent


def test_a_single_endpoint_is_reconnected_to_not_failed_over_to(caplog) -> None:
    caplog.set_level(logging.WARNING, logger="smartstack.etcd")
    Endpoints(["10.0.0.1:2379"], start=0)._next_endpoint("TimeoutError: no answer")
    Endpoints(["10.0.0.1:2379", "10.0.0.2:2379"], start=0)._next_endpoint("TimeoutError: x")
    single, cluster = (getattr(r, logs._FIELDS) for r in caplog.records)
    assert single.get("reconnect") == "10.0.0.1:2379" and "next" not in single, single
    assert cluster.get("next") == "10.0.0.2:2379" and "reconnect" not in cluster, cluster
