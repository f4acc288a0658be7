"""Which processes are our HAProxy masters (a fake /proc), and the marker that says whether
HAProxy runs the config file (``loadmark``)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from synapse.atomic import write_atomic
from synapse.haproxy.adoption import running_masters
from synapse.haproxy.configfile import ConfigFile
from synapse.haproxy.loadmark import LoadMark
from synapse.haproxy.ops import Plan, Reload

CONFIG, SOCKET = Path("/run/s/haproxy.cfg"), Path("/run/s/haproxy-master.sock")
OURS = ["haproxy", "-W", "-db", "-S", f"{SOCKET},mode,600", "-f", str(CONFIG)]


def _process(proc: Path, pid: int, parent: int, args: list[str]) -> None:
    entry = proc / str(pid)
    entry.mkdir()
    (entry / "cmdline").write_bytes(b"\0".join(a.encode() for a in args) + b"\0")
    (entry / "stat").write_text(f"{pid} (haproxy) S {parent} {pid} {pid} 0 -1\n")


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
        await mark.loaded()
        assert not mark.unknown and mark.with_reload(Plan()) == Plan()

        await mark.installing()  # synapse dies here: the next one does not trust the file
        again = LoadMark(config)
        await again.load(file_exists=True)
        assert again.unknown
        reloading = Plan((), Reload((("service_added", "backend api is not running"),)))
        assert again.with_reload(reloading).reload.kind == "service_added"  # type: ignore[union-attr]
        await again.loaded()
        trusted = LoadMark(config)
        await trusted.load(file_exists=True)
        assert not trusted.unknown

    asyncio.run(scenario())


async def _trusted(config: Path) -> bool:
    """A synapse starting now trusts the config file (no reload for the marker)."""
    mark = LoadMark(config)
    await mark.load(file_exists=True)
    return not mark.unknown


def test_a_file_written_by_something_else_since_is_not_trusted(tmp_path: Path) -> None:
    """An older synapse after a rollback (it knows no marker) wrote the file and died before
    its reload: the marker still said ``loaded`` and was trusted (a new port never bound)."""

    async def scenario() -> None:
        config = tmp_path / "haproxy.cfg"
        config.write_text("global\n")
        mark = LoadMark(config)
        await mark.load(file_exists=True)
        await mark.loaded()
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


def test_synapse_s_own_writes_keep_the_marker_naming_the_file(tmp_path: Path) -> None:
    """Runtime changes rewrite the file without a reload: the marker follows (a restart
    does not reload for them), but not in the install window (``installing`` stays)."""

    async def scenario() -> None:
        config = tmp_path / "haproxy.cfg"
        file, mark = ConfigFile(config), LoadMark(config)
        file.written = mark.written
        await file.load()
        await mark.load(file.exists)
        file.set(["global\n"])
        await file.flush()
        await mark.loaded()
        file.set(["global\n", "backend web\n    server a 10.0.0.1:80\n"])
        await file.flush()
        assert await _trusted(config)

        await mark.installing()
        file.set(["global\n", "frontend web\n"])
        await file.flush()
        assert not await _trusted(config)
        await file.close()

    asyncio.run(scenario())
