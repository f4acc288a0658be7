"""A step of the wall clock is applied to the state file's stamps once, whoever sees it
first (an update, the watcher, a load), and only to the stamps the clock record vouches
for (pure: injected wall clock, boottime and boot id; synapse.state_cache, state_clock)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from synapse_testlib import service_config

import synapse.state_read as state_read_module
from smartstack.boot_clock import WallStep
from smartstack.record import Registration
from synapse.model import Found
from synapse.selection import Selection, select_servers
from synapse.state_cache import StateCache
from synapse.state_recheck import watch_wall_clock

TTL = 3600.0
ZK = {"method": "zookeeper", "hosts": ["127.0.0.1:2181"], "path": "/nerve/web"}


class Host:
    """The injected clocks: ``wall`` (steps), ``boot`` (never steps), the boot's id."""

    def __init__(self) -> None:
        self.wall, self.boot = 1_700_000_000.0, 5_000.0

    def passes(self, seconds: float) -> None:
        self.wall += seconds
        self.boot += seconds

    def cache(self, path: Path) -> StateCache:
        return StateCache(path, TTL, lambda: self.wall, lambda: self.boot, lambda: "boot-1")


class Watched:
    """What watch_wall_clock needs of a reconciler."""

    def __init__(self, cache: StateCache) -> None:
        self.state_cache, self.rechecks = cache, 0

    def recheck_state_file(self) -> None:
        self.rechecks += 1


def selection(*ports: int) -> Selection:
    found = [Found(Registration(host="10.0.0.1", port=p, name=f"s{p}"), f"zk:{p}") for p in ports]
    return select_servers(service_config(ZK), found, None)


def stamps(path: Path) -> list[float]:
    web = json.loads(path.read_text())["web"]
    return [entry["timestamp"] for entry in web.values()]


def served(cache: StateCache) -> list[int]:
    return sorted(f.registration.port for f in cache.cached("web") or [])


async def until(done: Callable[[], bool], limit_s: float = 5.0) -> None:
    """Wait for ``done`` (the watcher writes the file in a thread, which a loaded machine
    may run late), at most ``limit_s``: the assertion after it still fails if it never is."""
    for _ in range(int(limit_s / 0.01)):
        if done():
            return
        await asyncio.sleep(0.01)


async def watched(host: Host, cache: StateCache, polls: int = 5) -> Watched:
    """The wall-clock watcher run for a few polls (its baseline taken now), until it has
    asked for a recheck (its write done) or 5 s passed."""
    rec = Watched(cache)
    watch = WallStep(lambda: host.wall, lambda: host.boot)
    task = asyncio.create_task(watch_wall_clock(rec, 0.01, watch))  # type: ignore[arg-type]
    await asyncio.sleep(0.01 * polls + 0.05)
    await until(lambda: rec.rechecks >= 1)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return rec


async def test_a_step_an_update_stamped_after_is_not_applied_again(tmp_path: Path) -> None:
    """The clock 2 h ahead is corrected; a registry change lands before the watcher polls:
    the update stamps on the corrected clock, and the watcher must not move them again."""
    host, path = Host(), tmp_path / "state.json"
    host.wall += 7200  # synapse runs with the clock 2 h ahead
    cache = host.cache(path)
    assert cache.update({"web": selection(1)}, ["web"])
    rec = Watched(cache)
    watch = WallStep(lambda: host.wall, lambda: host.boot)
    task = asyncio.create_task(watch_wall_clock(rec, 0.05, watch))  # type: ignore[arg-type]
    try:
        await asyncio.sleep(0.01)
        host.wall -= 7200  # NTP corrects it
        assert cache.update({"web": selection(1, 2)}, ["web"])  # a change, 0.01 s later
        await asyncio.sleep(0.2)  # the watcher polls (several times)
        await until(lambda: all(abs(stamp - host.wall) < 2 for stamp in stamps(path)))
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert all(abs(stamp - host.wall) < 2 for stamp in stamps(path)), stamps(path)
    again = host.cache(path)
    again.load()  # a restart in the same boot, the registry down
    assert served(again) == [1, 2]


async def test_a_step_before_the_watcher_starts_is_caught_up_with(tmp_path: Path) -> None:
    """The file was written on a clock 2 h behind; NTP corrects it after the load, before
    the watcher takes its baseline (the start waits for the registry): still moved."""
    host, path = Host(), tmp_path / "state.json"
    host.wall -= 7200
    assert host.cache(path).update({"web": selection(1)}, ["web"])
    cache = host.cache(path)
    cache.load()
    host.wall += 7200
    rec = await watched(host, cache)
    assert all(abs(stamp - host.wall) < 2 for stamp in stamps(path)), stamps(path)
    assert rec.rechecks >= 1


def test_stamps_another_writer_changed_are_not_moved_by_the_record(tmp_path: Path) -> None:
    """Python synapse wrote the file with its clock ahead; the clock corrected, Ruby synapse
    (a rollback) kept the reserved key but stamped the servers on the true clock; Python
    back 70 s later must not move Ruby's stamps by a step they were not made on."""
    host, path = Host(), tmp_path / "state.json"
    host.wall += 3550
    assert host.cache(path).update({"web": selection(1)}, ["web"])
    host.wall -= 3550
    doc = json.loads(path.read_text())
    for entry in doc["web"].values():
        entry["timestamp"] = int(host.wall)  # Ruby's update_state_file: its clock
    path.write_text(json.dumps(doc))
    host.passes(70)
    cache = host.cache(path)
    cache.load()
    assert served(cache) == [1]


def test_stamps_the_record_vouches_for_are_still_moved(tmp_path: Path) -> None:
    host, path = Host(), tmp_path / "state.json"
    host.wall += 2 * TTL  # written with the clock ahead, read after the correction
    assert host.cache(path).update({"web": selection(1)}, ["web"])
    host.wall -= 2 * TTL
    host.passes(TTL - 60)
    cache = host.cache(path)
    cache.load()
    assert served(cache) == [1]
    host.passes(120)
    assert served(cache) == [], "nothing older than the TTL"


def test_a_silent_service_all_too_old_is_not_parsed_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    host, path = Host(), tmp_path / "state.json"
    assert host.cache(path).update({"web": selection(1, 2)}, ["web"])
    cache = host.cache(path)
    cache.load()
    host.passes(2 * TTL)
    assert cache.cached("web") is None
    parsed: list[str] = []
    real = state_read_module.parse_line
    monkeypatch.setattr(
        state_read_module, "parse_line", lambda s, t: parsed.append(s) or real(s, t)
    )
    for _ in range(5):
        assert cache.cached("web") is None
    assert parsed == []


def test_a_bad_entry_is_logged_once_per_text(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    host, path = Host(), tmp_path / "state.json"
    bad = {"timestamp": int(host.wall), "host": "10.0.0.9", "port": "x", "name": "bad"}
    path.write_text(json.dumps({"web": {"bad_1": bad}}))
    cache = host.cache(path)
    cache.load()
    with caplog.at_level(logging.WARNING, logger="synapse.state_cache"):
        for _ in range(5):
            assert cache.cached("web") is None
    assert sum("state_file_bad_entry" in r.getMessage() for r in caplog.records) == 1
