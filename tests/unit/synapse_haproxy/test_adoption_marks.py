"""Which processes are our HAProxy masters (a fake /proc), and the marker that says whether
HAProxy runs the config file (``loadmark``)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from synapse.atomic import write_atomic
from synapse.haproxy import loadmark
from synapse.haproxy.adoption import running_masters
from synapse.haproxy.configfile import ConfigFile
from synapse.haproxy.loadmark import LoadMark, loaded_text, vouches
from synapse.haproxy.ops import Plan, Reload

CONFIG, SOCKET = Path("/run/s/haproxy.cfg"), Path("/run/s/haproxy-master.sock")
OURS = ["haproxy", "-W", "-db", "-S", f"{SOCKET},mode,600", "-f", str(CONFIG)]


def _process(proc: Path, pid: int, parent: int, args: list[str]) -> None:
    entry = proc / str(pid)
    entry.mkdir()
    (entry / "cmdline").write_bytes(b"\0".join(a.encode() for a in args) + b"\0")
    (entry / "stat").write_text(f"{pid} (haproxy) S {parent} {pid} {pid} 0 -1\n")
    (entry / "comm").write_text("haproxy\n")  # (only HAProxy processes are masters)


def test_a_master_is_a_process_running_our_config_with_a_worker(tmp_path: Path) -> None:
    _process(tmp_path, 10, 1, OURS)  # a master, its worker 11, and an old worker 12
    _process(tmp_path, 11, 10, OURS)
    _process(tmp_path, 12, 10, ["haproxy", "-sf", "9", *OURS[1:]])
    _process(tmp_path, 20, 1, OURS)  # an orphaned worker of a dead master: exits alone
    _process(tmp_path, 30, 1, ["haproxy", "-W", "-S", "/other.sock", "-f", str(CONFIG)])
    _process(tmp_path, 31, 30, ["haproxy", "-W", "-S", "/other.sock", "-f", str(CONFIG)])
    _process(tmp_path, 40, 1, ["haproxy", "-W", "-S", f"{SOCKET}", "-f", "/other.cfg"])
    _process(tmp_path, 41, 40, ["haproxy", "-W", "-S", f"{SOCKET}", "-f", "/other.cfg"])
    (tmp_path / "self").mkdir()
    assert running_masters(CONFIG, SOCKET, tmp_path) == (10,)


def test_a_master_running_our_config_under_another_socket_is_found(tmp_path: Path) -> None:
    """``managed.master_socket_path`` moved: the old master is ours too (adopted, replaced)."""
    moved_args = ["haproxy", "-W", "-db", "-S", "/old/m.sock,mode,600", "-f", str(CONFIG)]
    _process(tmp_path, 30, 1, moved_args)
    _process(tmp_path, 31, 30, moved_args)
    _process(tmp_path, 40, 1, ["haproxy", "-W", "-S", str(SOCKET), "-f", "/other.cfg"])
    _process(tmp_path, 41, 40, ["haproxy", "-W", "-S", str(SOCKET), "-f", "/other.cfg"])
    _process(tmp_path, 50, 1, ["haproxy", "-f", str(CONFIG)])  # (no master CLI: not ours)
    _process(tmp_path, 51, 50, ["haproxy", "-f", str(CONFIG)])
    assert running_masters(CONFIG, SOCKET, tmp_path) == ()
    assert running_masters(CONFIG, None, tmp_path) == (30,)


def test_the_marker_says_whether_haproxy_runs_the_file(tmp_path: Path) -> None:
    async def scenario() -> None:
        config = tmp_path / "haproxy.cfg"
        mark = LoadMark(config)
        await mark.load(file_exists=False)  # a first start: nothing runs a file
        assert not mark.unknown
        config.write_text("global\n")
        await mark.load(file_exists=True)  # an upgrade: no marker beside a file
        assert mark.unknown

        plan = mark.with_reload(Plan())
        assert plan.reload is not None and plan.reload.kind == "config"
        assert "older synapse (an upgrade)" in plan.reload.reasons[0][1]  # (the log's reason)
        await mark.loaded()
        assert not mark.unknown and mark.with_reload(Plan()) == Plan()

        await mark.installing()  # synapse dies here: the next one does not trust the file
        again = LoadMark(config)
        await again.load(file_exists=True)
        assert again.unknown
        reloading = Plan((), Reload((("service_added", "backend api is not running"),)))
        assert again.with_reload(reloading).reload.kind == "service_added"  # type: ignore[union-attr]
        assert "stopped between writing it and the reload" in again.reason
        await again.loaded()
        trusted = LoadMark(config)
        await trusted.load(file_exists=True)
        assert not trusted.unknown
        config.write_text("global\n# an operator's edit\n")
        edited = LoadMark(config)
        await edited.load(file_exists=True)
        assert edited.unknown and "written since by something else" in edited.reason

    asyncio.run(scenario())


async def _trusted(config: Path) -> bool:
    """A synapse starting now trusts the config file (no reload for the marker)."""
    mark = LoadMark(config)
    await mark.load(file_exists=True)
    return not mark.unknown


async def _vouched(config: Path, text: str) -> LoadMark:
    """``text`` in the config file, HAProxy confirmed to run it."""
    config.write_text(text)
    mark = LoadMark(config)
    await mark.load(file_exists=True)
    await mark.loaded()
    return mark


def test_a_file_written_by_something_else_since_is_not_trusted(tmp_path: Path) -> None:
    """An older synapse after a rollback (it knows no marker) wrote the file and died before
    its reload: the marker still said ``loaded`` and was trusted (a new port never bound)."""

    async def scenario() -> None:
        config = tmp_path / "haproxy.cfg"
        mark = await _vouched(config, "global\n")
        assert await _trusted(config)

        write_atomic(config, "global\nfrontend a\n")  # (replaced: another inode)
        assert not await _trusted(config)
        await mark.loaded()
        with config.open("a") as same:  # (rewritten in place: the inode stays)
            same.write("    bind :81\n")
        assert not await _trusted(config)
        (tmp_path / "haproxy.cfg.loaded").write_text("loaded\n")  # (a marker without identity)
        assert not await _trusted(config)

    asyncio.run(scenario())


async def _runtime_writes(config: Path) -> tuple[ConfigFile, LoadMark]:
    """A config file HAProxy was confirmed to run, written by synapse from then on."""
    file, mark = ConfigFile(config), LoadMark(config)
    file.write = mark.write_config
    await file.load()
    await mark.load(file.exists)
    file.set(["global\n"])
    await file.flush()
    await mark.loaded()
    return file, mark


def test_synapse_s_own_writes_keep_the_marker_naming_the_file(tmp_path: Path) -> None:
    """Runtime changes rewrite the file without a reload: the marker follows (a restart
    does not reload for them), but not in the install window (``installing`` stays)."""

    async def scenario() -> None:
        config = tmp_path / "haproxy.cfg"
        file, mark = await _runtime_writes(config)
        file.set(["global\n", "backend web\n    server a 10.0.0.1:80\n"])
        await file.flush()
        assert await _trusted(config)

        await mark.installing()
        file.set(["global\n", "frontend web\n"])
        await file.flush()
        assert not await _trusted(config)
        await file.close()

    asyncio.run(scenario())


def test_a_kill_right_after_a_runtime_write_leaves_the_file_trusted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The marker was renamed in a later thread hop than the file (1-20 ms measured): 5 of
    5 kill -9s there cost a reload at the next start (and put the state file behind)."""
    config = tmp_path / "haproxy.cfg"
    seen: list[bool] = []
    real = os.replace

    def replace(src: str, dst: str | Path) -> None:
        real(src, dst)
        if Path(dst) == config:  # a kill -9 now: what would the next synapse trust?
            seen.append(vouches(config))

    async def scenario() -> None:
        file, _ = await _runtime_writes(config)
        monkeypatch.setattr(os, "replace", replace)
        for n in range(3):
            file.set(["global\n", f"backend web\n    server a 10.0.0.{n}:80\n"])
            await file.flush()
        monkeypatch.undo()
        await file.close()

    asyncio.run(scenario())
    assert seen == [True, True, True]
    assert vouches(config)


def test_flush_and_close_wait_for_the_marker_of_the_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """flush() returned, and close() cancelled the writer, while the marker of the write
    just made was still being written (a loaded machine: the next start reloaded)."""
    config = tmp_path / "haproxy.cfg"
    real = loadmark.write_atomic

    def slow(*args: object, **kwargs: object) -> None:
        time.sleep(0.05)
        real(*args, **kwargs)  # type: ignore[arg-type]

    async def scenario() -> None:
        file, _ = await _runtime_writes(config)
        monkeypatch.setattr(loadmark, "write_atomic", slow)
        file.set(["global\n", "# runtime change\n"])
        while config.read_text() != "global\n# runtime change\n":  # (the file is there)
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.01)  # (the writer is on to the marker: 50 ms)
        await file.flush()
        assert marker.read_text() == loaded_text(config)
        file.set(["global\n", "# another\n"])
        await asyncio.sleep(0)  # (the writer started)
        await file.close()
        assert marker.read_text() == loaded_text(config)

    marker = tmp_path / "haproxy.cfg.loaded"
    asyncio.run(scenario())


def test_a_file_rewritten_to_the_same_size_and_mtime_is_not_trusted(tmp_path: Path) -> None:
    """Size and mtime alone named the file (ext4 alternates two inodes between atomic
    writes): a writer that kept them (``utime``) went unseen. No ``utime`` sets the ctime."""

    async def scenario() -> None:
        config = tmp_path / "haproxy.cfg"
        await _vouched(config, "global\n    bind :80\n")
        before = os.stat(config)
        time.sleep(0.02)  # (the ctime's clock is coarse: a tick or so)
        config.write_text("global\n    bind :81\n")
        os.utime(config, ns=(before.st_atime_ns, before.st_mtime_ns))
        assert not await _trusted(config)

    asyncio.run(scenario())
