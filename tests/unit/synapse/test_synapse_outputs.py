"""state_file_path cache and file_output: atomic files, written only on change."""

from __future__ import annotations

import errno
import json
import logging
from pathlib import Path

import pytest

from smartstack.record import Registration
from synapse.config import ServiceConfig
from synapse.file_output import FileOutput
from synapse.model import Found
from synapse.selection import select_servers
from synapse.state_cache import StateCache

CFG = ServiceConfig.model_validate(
    {"discovery": {"method": "base"}, "default_servers": [{"name": "d", "host": "h", "port": 1}]}
)


def selection(*hosts: str):
    found = [Found(Registration(host=h, port=80, name=f"n{i}"), "zk") for i, h in enumerate(hosts)]
    return select_servers(CFG, found, None)


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def test_state_cache_round_trip_and_ttl(tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / "state.json"
    cache = StateCache(path, ttl=3600, clock=clock)
    assert cache.update({"web": selection("10.0.0.1", "10.0.0.2")}, ["web"])
    doc = json.loads(path.read_text())
    entry = doc["web"]["n0_10.0.0.1:80"]
    assert entry == {"timestamp": int(clock.now), "host": "10.0.0.1", "port": 80, "name": "n0"}
    # Same servers again: nothing is written.
    mtime = path.stat().st_mtime_ns
    assert not cache.update({"web": selection("10.0.0.1", "10.0.0.2")}, ["web"])
    assert path.stat().st_mtime_ns == mtime

    fresh = StateCache(path, ttl=3600, clock=clock)
    fresh.load()
    cached = fresh.cached("web")
    assert cached is not None
    assert sorted(f.registration.host for f in cached) == ["10.0.0.1", "10.0.0.2"]
    clock.now += 3601
    assert fresh.cached("web") is None, "entries older than the TTL are not used"


def test_state_cache_ignores_defaults_and_drops_removed_services(tmp_path: Path) -> None:
    cache = StateCache(tmp_path / "s.json", ttl=60, clock=Clock())
    defaults = select_servers(CFG, [], None)
    cache.update({"web": selection("10.0.0.1"), "db": defaults}, ["web", "db"])
    doc = json.loads((tmp_path / "s.json").read_text())
    assert doc.pop("_synapse").keys() == {"clock"}  # (when it was written: state_clock)
    assert set(doc) == {"web"}
    cache.update({}, ["db"])
    assert json.loads((tmp_path / "s.json").read_text()) == {}


def test_state_cache_refuses_hostile_and_broken_entries(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    clock = Clock()
    path.write_text(json.dumps({"web": {
        "good": {"timestamp": clock.now, "host": "10.0.0.1", "port": 80, "name": "a"},
        "evil": {"timestamp": clock.now, "host": "x\n server y 1.1.1.1:1", "port": 80, "name": "b"},
        "noport": {"timestamp": clock.now, "host": "10.0.0.2", "name": "c"},
        "nostamp": {"host": "10.0.0.3", "port": 80, "name": "d"},
    }}))  # fmt: skip
    cache = StateCache(path, ttl=60, clock=clock)
    cache.load()
    cached = cache.cached("web")
    assert cached is not None and [f.registration.host for f in cached] == ["10.0.0.1"]


def test_state_cache_survives_a_corrupt_file(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text("{not json")
    cache = StateCache(path, ttl=60)
    cache.load()
    assert cache.cached("web") is None and cache.last_error


def test_file_output_writes_on_change_and_removes_stale_files(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "gone.json").write_text("[]")
    (out / "notes.txt").write_text("not ours")
    writer = FileOutput(out)
    assert writer.update({"web": selection("10.0.0.2", "10.0.0.1")}, ["web"]) == ["web"]
    records = json.loads((out / "web.json").read_text())
    assert records == [
        {"host": "10.0.0.1", "name": "n1", "port": 80},
        {"host": "10.0.0.2", "name": "n0", "port": 80},
    ]
    assert not (out / "gone.json").exists()
    assert (out / "notes.txt").exists()
    assert writer.update({"web": selection("10.0.0.2", "10.0.0.1")}, ["web"]) == []
    # A restarted synapse does not rewrite an identical file.
    assert FileOutput(out).update({"web": selection("10.0.0.2", "10.0.0.1")}, ["web"]) == []
    assert writer.update({"web": selection("10.0.0.3")}, ["web"]) == ["web"]
    # file_output.disabled: the service's file goes away.
    writer.update({"web": selection("10.0.0.3")}, [])
    assert not (out / "web.json").exists()
    assert not list(out.glob(".*tmp")), "no temp files left behind"


def test_a_stale_file_that_cannot_be_removed_is_reported_and_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The directory went read-only and a service went away: its file stays, said once (not
    an exception: that stopped synapse, and HAProxy with it in a container), and goes at a
    later update once it can."""
    out = tmp_path / "out"
    writer = FileOutput(out)
    both = {"web": selection("10.0.0.1"), "api": selection("10.0.0.2")}
    assert writer.update(both, ["web", "api"]) == ["api", "web"]
    unlink = Path.unlink

    def read_only(path: Path, missing_ok: bool = False) -> None:
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(Path, "unlink", read_only)
    with caplog.at_level(logging.INFO, logger="synapse.file_output"):
        assert writer.update({"web": selection("10.0.0.3")}, ["web"]) == ["web"]
        assert writer.update({"web": selection("10.0.0.3")}, ["web"]) == []
        monkeypatch.setattr(Path, "unlink", unlink)
        writer.update({"web": selection("10.0.0.3")}, ["web"])
    failed = [r for r in caplog.records if r.getMessage() == "file_output_failed"]
    assert len(failed) == 1, [r.getMessage() for r in caplog.records]
    assert failed[0].levelno == logging.WARNING
    assert writer.last_error is not None and writer.last_error.startswith("api: cannot remove")
    assert "Read-only file system" in writer.last_error
    assert not (out / "api.json").exists(), "removed once the disk is writable again"
    assert [r.getMessage() for r in caplog.records].count("file_output_removed") == 1
