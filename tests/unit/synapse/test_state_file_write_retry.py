"""A state file write that a full disk refused is retried until it succeeds, said once.

Review s29 (MEDIUM-1): the cache wrote only when something changed, so after a full disk
the file kept the servers of before it filled (until the next change or the refresh a
quarter TTL later); a host crash then a start with the registry down served a removed
server and missed a new one. Every retry that failed was logged, and nothing said the end.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from smartstack.record import Registration
from synapse import atomic, round_outputs, state_cache
from synapse.metrics import SynapseMetrics
from synapse.model import Server
from synapse.round_outputs import RoundOutputs
from synapse.selection import ORIGIN_DISCOVERY, Selection
from synapse.state_cache import StateCache

GAUGE = "synapse_state_file_write_failing_seconds"


def selection(*names: str) -> Selection:
    regs = [Registration(host=f"10.0.0.{ord(n[0])}", port=80, name=n) for n in names]
    servers = tuple(Server.from_registration(r, "zk:/web") for r in regs)
    return Selection(servers, tuple(regs), ORIGIN_DISCOVERY)


def in_file(path: Path) -> list[str]:
    """The names of the servers the file holds for ``web`` (those left out)."""
    web = json.loads(path.read_text())["web"]
    return sorted(v["name"] for v in web.values() if isinstance(v, dict) and not v.get("left"))


class Disk:
    """``write_atomic`` on a disk that can be full: ENOSPC while ``full``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.full, self.attempts = False, 0
        real = state_cache.write_atomic

        def write(path: Path, data: Any, *args: Any, **kwargs: Any) -> None:
            self.attempts += 1
            if self.full:
                raise OSError(errno.ENOSPC, "No space left on device")
            real(path, data, *args, **kwargs)

        monkeypatch.setattr(state_cache, "write_atomic", write)


def events(caplog: pytest.LogCaptureFixture, name: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == name]


def test_a_refused_write_is_retried_by_the_next_update_with_nothing_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path, disk = tmp_path / "state.json", Disk(monkeypatch)
    cache = StateCache(path, 3600, clock=lambda: 1_000_000.0)
    assert cache.update({"web": selection("a", "b")}, ["web"])
    disk.full = True
    now = {"web": selection("a", "c")}  # (b withdrawn, c added while the disk is full)
    with caplog.at_level(logging.INFO, logger="synapse.state_cache"):
        assert not cache.update(now, ["web"])
        for _ in range(5):  # the retries: nothing changed since the refused write
            assert not cache.update(now, ["web"])
        assert disk.attempts == 7, "each update tries the write again while it fails"
        assert in_file(path) == ["a", "b"]
        assert len(events(caplog, "state_file_write_failed")) == 1, "once, not per retry"
        [line] = cache.write_streak.degraded("state file", "it lags")
        assert "ENOSPC" in line and "6 failed writes" in line and str(path) in line
        disk.full = False  # space is back: the next update writes, though nothing changed
        assert cache.update(now, ["web"])
    assert in_file(path) == ["a", "c"]
    assert not cache.failing and cache.write_streak.degraded("state file", "x") == []
    assert not cache.update(now, ["web"]), "written: no write until something changes"
    [failed] = events(caplog, "state_file_write_failed")
    assert failed.levelno == logging.WARNING
    assert failed.smartstack_fields["errno"] == "ENOSPC"  # type: ignore[attr-defined]
    [recovered] = events(caplog, "state_file_write_recovered")
    assert recovered.smartstack_fields["failures"] == 6  # type: ignore[attr-defined]


async def test_the_round_writer_retries_each_interval_until_the_disk_takes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(round_outputs, "STATE_FILE_INTERVAL", 0.05)
    path, disk = tmp_path / "state.json", Disk(monkeypatch)
    cache = StateCache(path, 3600, clock=lambda: 1_000_000.0)
    assert cache.update({"web": selection("a", "b")}, ["web"])
    registry = CollectorRegistry()
    outputs = RoundOutputs(
        SynapseMetrics(registry), lambda: cache, lambda: ({"web": selection("a", "c")}, ["web"], {})
    )
    disk.full, before = True, disk.attempts
    outputs.state_file_due()  # a round's change, once
    await asyncio.sleep(0.5)
    tries = disk.attempts - before
    assert 4 <= tries <= 12, f"one try an interval (0.05 s), not a tight loop: {tries}"
    assert (registry.get_sample_value(GAUGE) or 0) > 0.3
    assert in_file(path) == ["a", "b"]
    disk.full = False
    await asyncio.sleep(0.2)
    assert in_file(path) == ["a", "c"], "written within an interval of space returning"
    assert outputs.task is not None and outputs.task.done(), "the writer rests once written"
    assert registry.get_sample_value(GAUGE) == 0
    await outputs.final()


def test_no_temp_file_is_left_by_a_write_the_disk_refuses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real writer (its temp file beside the file), the disk full at the write: the
    temp file goes (it did before this fix too: a guard)."""
    path = tmp_path / "state.json"
    cache = StateCache(path, 3600, clock=lambda: 1_000_000.0)

    def full(fd: int) -> None:  # (after the temp file was made and written)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", full)
    assert not cache.update({"web": selection("a")}, ["web"])
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == []
