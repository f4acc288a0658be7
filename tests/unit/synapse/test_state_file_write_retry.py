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
from synapse.config import SynapseConfig
from synapse.daemon_parts import make_state_cache
from synapse.metrics import SynapseMetrics
from synapse.model import Server
from synapse.round_outputs import RoundOutputs
from synapse.selection import ORIGIN_DISCOVERY, Selection
from synapse.state_cache import StateCache
from synapse.zone_state import Evacuations

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


class NearlyFull(Disk):
    """A disk with room for ``room`` bytes of file: a smaller text fits, a larger one not."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, room: int) -> None:
        super().__init__(monkeypatch)
        self.room, real = room, state_cache.write_atomic

        def write(path: Path, data: Any, *args: Any, **kwargs: Any) -> None:
            if len(data) > self.room:
                raise OSError(errno.ENOSPC, "No space left on device")
            real(path, data, *args, **kwargs)

        monkeypatch.setattr(state_cache, "write_atomic", write)


def test_an_evacuations_write_of_the_older_servers_ends_no_streak(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Review s29 LOW-1: the update's write refused, an evacuation's write (the servers last
    written) succeeded: "recovered" was said, /health cleared and the retries stopped while
    the file still lacked the update's servers. On a nearly full disk (the older, smaller
    text fits, the newer not) each evacuation ended the streak and the next retry began
    another: it flapped."""
    path = tmp_path / "state.json"
    cache = StateCache(path, 3600, clock=lambda: 1_000_000.0)
    assert cache.update({"web": selection("a")}, ["web"])
    disk = NearlyFull(monkeypatch, room=len(path.read_text()) + 120)  # (a and az0 fit)
    now = {"web": selection("a", "b", "c")}
    with caplog.at_level(logging.INFO, logger="synapse.state_cache"):
        for i in range(3):
            assert not cache.update(now, ["web"])  # refused: the new text is larger
            assert cache.save_evacuations(Evacuations().evacuate(f"az{i}")), "the older fits"
            assert in_file(path) == ["a"]
            assert cache.failing, "the file still lacks b and c: retried, not recovered"
            assert cache.write_streak.degraded("state file", "it lags") != []
        assert events(caplog, "state_file_write_recovered") == []
        assert len(events(caplog, "state_file_write_failed")) == 1, "one streak, no flap"
        disk.room = 1 << 20
        assert cache.update(now, ["web"])
    assert in_file(path) == ["a", "b", "c"] and not cache.failing
    [recovered] = events(caplog, "state_file_write_recovered")
    assert recovered.smartstack_fields["failures"] == 3  # type: ignore[attr-defined]


async def test_the_round_writer_retries_though_an_evacuation_was_written_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review s29 LOW-1 (race_lost_retry.py): the evacuation's write lands between the
    round's refused update and ``_flush`` reading ``failing``: the writer stopped and the
    file kept b (withdrawn) without c until the next change or the refresh."""
    monkeypatch.setattr(round_outputs, "STATE_FILE_INTERVAL", 0.05)
    path, disk = tmp_path / "state.json", Disk(monkeypatch)
    cache = StateCache(path, 3600, clock=lambda: 1_000_000.0)
    assert cache.update({"web": selection("a", "b")}, ["web"])
    real = cache.update

    def update(*args: Any) -> bool:
        written = real(*args)  # the round's write, refused
        if disk.full:  # meanwhile: space back, the zone API's thread writes an evacuation
            disk.full = False
            cache.save_evacuations(Evacuations().evacuate("az2"))
        return written

    monkeypatch.setattr(cache, "update", update)
    outputs = RoundOutputs(
        SynapseMetrics(CollectorRegistry()),
        lambda: cache,
        lambda: ({"web": selection("a", "c")}, ["web"], {}),
    )
    disk.full = True
    outputs.state_file_due()
    await asyncio.sleep(0.3)
    assert in_file(path) == ["a", "c"], "retried an interval later: the servers served"
    assert not cache.failing and outputs.task is not None and outputs.task.done()
    await outputs.final()


async def test_a_sighup_moving_a_failing_state_file_ends_its_streak_and_fills_the_new_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Review s29 LOW-2 and LOW-3 (sighup_move.py): the old path's streak never ended in
    the log; the new file held ``{}`` (make_state_cache's write of a fresh cache) until
    the writer's next interval, ~1 s: a crash then a start with the registry down read
    no server."""
    old_path, new_path = tmp_path / "a.json", tmp_path / "b.json"
    old = StateCache(old_path, 3600)
    assert old.update({"web": selection("a", "b")}, ["web"])
    evacuated = Evacuations().evacuate("az2")
    config = SynapseConfig.model_validate({
        "services": {}, "admin": {"port": None},
        "haproxy": {"config_file_path": str(tmp_path / "haproxy.cfg"),
                    "reload_command": "true", "state_file_path": str(new_path)},
    })  # fmt: skip
    holder: list[StateCache | None] = [old]
    outputs = RoundOutputs(
        SynapseMetrics(CollectorRegistry()),
        lambda: holder[0],
        lambda: ({"web": selection("a", "c")}, ["web"], {}),
    )
    disk = Disk(monkeypatch)
    disk.full = True
    with caplog.at_level(logging.INFO, logger="synapse.state_cache"):
        assert not old.update({"web": selection("a", "c")}, ["web"])
        disk.full = False  # (the new path: another disk, with room)
        holder[0] = make_state_cache(config, evacuated)  # as the daemon's SIGHUP does
        assert not new_path.exists() or in_file(new_path) != [], "never an empty file"
        await outputs.moved(old)
        assert in_file(new_path) == ["a", "c"], "every server at once, not an interval later"
    fresh = StateCache(new_path, 3600)
    fresh.load()
    assert fresh.evacuations == evacuated
    [abandoned] = events(caplog, "state_file_write_abandoned")
    fields = abandoned.smartstack_fields  # type: ignore[attr-defined]
    assert fields["path"] == str(old_path) and fields["moved_to"] == str(new_path)
    assert fields["failures"] == 1 and abandoned.levelno == logging.WARNING
    assert events(caplog, "state_file_write_recovered") == []
    await outputs.final()
