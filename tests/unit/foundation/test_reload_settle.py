"""A reload one of whose files was written in place (or is new) a moment ago waits for the
files to be still and applies what they then say (smartstack.reload_settle).

Review s32: a config rewritten by ``>`` then ``>>`` with a 1.0 s pause, SIGHUP between the
two: the first part alone is valid YAML without the ``api`` service; synapse applied
``services=1`` (496 of 562 api requests failed) and both nerves withdrew api.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path

import pytest
import yaml

from smartstack import config_read, reload_settle
from smartstack.reload_settle import (
    Stamp,
    file_stamps,
    fresh_in_place,
    hold_fresh_write,
    is_still,
    stamps,
    wait_still,
    whole_json_file,
    written_in_place,
)
from synapse.config import SynapseConfig
from synapse.daemon import SynapseDaemon

NOW = 1_000_000.0
NS = int(1e9)


def test_a_file_written_in_place_or_new_a_moment_ago_holds() -> None:
    last = (7, 100, int(NOW - 60) * NS)
    assert written_in_place(last, (7, 60, int(NOW - 0.3) * NS), NOW)  # `>`: same inode
    assert written_in_place(last, (7, 100, int(NOW - 0.3) * NS), NOW)  # same size, new mtime
    assert written_in_place(None, (9, 60, int(NOW - 0.3) * NS), NOW)  # new (conf dir file)
    assert written_in_place(last, (7, 60, int(NOW + 5) * NS), NOW)  # a future mtime: waits


def test_a_file_renamed_over_deleted_unchanged_or_older_does_not_hold() -> None:
    last = (7, 100, int(NOW - 60) * NS)
    assert not written_in_place(last, (8, 60, int(NOW - 0.1) * NS), NOW)  # `mv`: new inode
    assert not written_in_place(last, None, NOW)  # a service_conf_dir file deleted
    assert not written_in_place(last, last, NOW)  # not written since the last read
    assert not written_in_place(last, (7, 60, int(NOW - 2.5) * NS), NOW)  # 2.5 s ago: done
    assert not written_in_place(None, (9, 60, int(NOW - 3) * NS), NOW)  # new, long ago


def test_the_file_written_in_place_is_named(tmp_path: Path) -> None:
    main, confd = tmp_path / "nerve.yaml", tmp_path / "conf.d"
    confd.mkdir()
    main.write_text("a: 1\n")
    (confd / "api.yaml").write_text("x: 1\n")
    (confd / "web.yaml").write_text("x: 1\n")
    last = file_stamps(main, [str(confd)])
    old = time.time() - 30
    for path in last:
        os.utime(path, (old, old))
    last = file_stamps(main, [str(confd)])
    assert fresh_in_place(last, file_stamps(main, [str(confd)]), time.time()) is None
    (confd / "api.yaml").unlink()  # deleted: no hold
    tmp = confd / ".web.tmp"
    tmp.write_text("x: 2\n")
    tmp.rename(confd / "web.yaml")  # renamed over: no hold
    assert fresh_in_place(last, file_stamps(main, [str(confd)]), time.time()) is None
    with (confd / "web.yaml").open("a") as file:  # then `>>` into it: in place
        file.write("y: 1\n")
    last = {**last, confd / "web.yaml": file_stamps(main, [str(confd)])[confd / "web.yaml"]}
    with (confd / "web.yaml").open("a") as file:
        file.write("z: 1\n")
    hit = fresh_in_place(last, file_stamps(main, [str(confd)]), time.time())
    assert hit is not None and hit[0] == confd / "web.yaml"


def test_files_are_still_once_unchanged_for_the_settle_time() -> None:
    assert not is_still(0.5, 0.5)
    assert is_still(2.0, 0.0)
    assert is_still(-10.0, 2.0)  # a future mtime that stays put
    assert is_still(None, 0.0)


class FakeTime:
    """A clock that sleeping moves, and a writer that touches ``path`` at given times."""

    def __init__(self, path: Path, writes: list[float]) -> None:
        self.path, self.writes, self.now = path, sorted(writes), 1_000_000.0
        self.start = self.now
        self._touch()

    def _touch(self) -> None:
        with self.path.open("a") as file:
            file.write("x\n")
        os.utime(self.path, ns=(int(self.now * 1e9), int(self.now * 1e9)))

    async def sleep(self, seconds: float) -> None:
        end = self.now + seconds
        while self.writes and self.start + self.writes[0] <= end:
            self.now = self.start + self.writes.pop(0)
            self._touch()
        self.now = end

    def clock(self) -> float:
        return self.now


async def test_the_wait_ends_the_settle_time_after_the_last_write(tmp_path: Path) -> None:
    fake = FakeTime(tmp_path / "synapse.yaml", writes=[1.2])  # `>` at 0, `>>` 1.2 s later
    waited, still = await wait_still([fake.path], sleep=fake.sleep, clock=fake.clock,
                                     wall=fake.clock)  # fmt: skip
    assert still and 3.19 <= fake.now - fake.start <= 3.8, fake.now - fake.start
    assert waited == pytest.approx(fake.now - fake.start)


async def test_a_file_that_keeps_changing_is_taken_as_it_is_after_the_bound(
    tmp_path: Path,
) -> None:
    fake = FakeTime(tmp_path / "synapse.yaml", writes=[0.5 * k for k in range(1, 40)])
    waited, still = await wait_still([fake.path], sleep=fake.sleep, clock=fake.clock,
                                     wall=fake.clock)  # fmt: skip
    assert not still and reload_settle.HOLD_MAX_S <= waited <= reload_settle.HOLD_MAX_S + 0.6


def synapse_config(services: dict[str, list[int]]) -> SynapseConfig:
    return SynapseConfig.model_validate({"admin": {"port": None}, "services": {
        name: {"discovery": {"method": "base"}, "haproxy": {"port": 30000 + i},
               "default_servers": [{"name": f"s{p}", "host": "127.0.0.1", "port": p}
                                   for p in ports]}
        for i, (name, ports) in enumerate(services.items())
    }})  # fmt: skip


TEXT = """\
admin: {port: null}
services:
  web:
    discovery: {method: base}
    default_servers: [{name: w, host: 127.0.0.1, port: 8002}]
    haproxy: {port: 30001}
"""
API = """\
  api:
    discovery: {method: base}
    default_servers: [{name: a, host: 127.0.0.1, port: 8001}]
    haproxy: {port: 30002}
"""


def reloading_daemon(
    path: Path, services: dict[str, list[int]]
) -> tuple[SynapseDaemon, list[SynapseConfig]]:
    """A started synapse daemon of ``path`` (its reload path, in-process load) and the
    configs its reloads apply."""
    daemon = SynapseDaemon(synapse_config(services), str(path))
    daemon.reconciler = object()  # type: ignore[assignment]  # started
    applied: list[SynapseConfig] = []

    async def apply(new: SynapseConfig) -> None:
        applied.append(new)

    daemon.apply_config = apply  # type: ignore[method-assign]
    daemon.service_watchers.sighup = lambda: None  # type: ignore[method-assign]
    return daemon, applied


async def test_a_sighup_between_gt_and_gtgt_applies_the_complete_file(tmp_path: Path) -> None:
    """The daemon's reload path (in-process load) with a real file: ``>`` the first part
    (valid YAML without api), SIGHUP, 1.2 s, ``>>`` the rest."""
    path = tmp_path / "synapse.yaml"
    path.write_text(TEXT + API)
    daemon, applied = reloading_daemon(path, {"web": [8002], "api": [8001]})
    path.write_text(TEXT)  # `>`: closed, no writer left (smartstack.config_read reads it)

    def second_writer() -> None:
        time.sleep(1.2)
        with path.open("a") as file:  # `>>`
            file.write(API)

    writer = threading.Thread(target=second_writer)
    writer.start()
    try:
        assert await daemon.reload_config()
    finally:
        writer.join()
    assert [sorted(config.services) for config in applied] == [["api", "web"]]


async def test_a_whole_json_file_written_in_place_does_not_hold(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No prefix of a JSON object is one; the text checked must be the one the reload read
    (its stamps unchanged since), else the hold stays."""
    waits: list[list[Path]] = []

    async def wait_still(paths: list[Path]) -> tuple[float, bool]:
        waits.append(paths)
        return 0.0, True

    monkeypatch.setattr(reload_settle, "wait_still", wait_still)
    main, confd = tmp_path / "synapse.json", tmp_path / "conf.d"
    confd.mkdir()
    main.write_text('{"services": {}}\n')
    (confd / "api.yaml").write_text("x: 1\n")
    old = time.time() - 30
    for path in (main, confd / "api.yaml"):
        os.utime(path, (old, old))
    last = file_stamps(main, [str(confd)])
    log = logging.getLogger("test")

    async def held(read: dict[Path, Stamp] | None) -> bool:
        return await hold_fresh_write(main, [str(confd)], last, log, read)

    main.write_text('{"services": {"web": {}}}\n')  # in place, a moment ago
    assert not await held(file_stamps(main, [str(confd)])) and waits == []
    assert await held(None)  # (what it read unknown)
    read = file_stamps(main, [str(confd)])
    main.write_text('{"services": {"web": {}, "api": {}}}\n')  # changed since it was read
    assert await held(read)
    for prefix in ("", '{"services": {"web": {}'):  # `>` and what follows not there yet
        main.write_text(prefix)
        assert await held(file_stamps(main, [str(confd)]))
    main.write_text("{}")
    with (confd / "api.yaml").open("a") as file:  # YAML written in place: still held
        file.write("y: 2\n")
    assert await held(file_stamps(main, [str(confd)]))
    assert len(waits) == 5


async def test_a_sighup_after_a_json_config_was_written_in_place_applies_it_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "synapse.json"
    whole = json.dumps(yaml.safe_load(TEXT + API), indent=1)
    path.write_text(json.dumps(yaml.safe_load(TEXT)))
    daemon, applied = reloading_daemon(path, {"web": [8002]})
    monkeypatch.setattr(reload_settle, "wait_still", lambda *a: pytest.fail("held"))
    path.write_text(whole)  # in place, then SIGHUP
    assert await daemon.reload_config()
    assert [sorted(config.services) for config in applied] == [["api", "web"]]


def test_a_pipe_is_not_read_for_whether_it_is_whole(tmp_path: Path) -> None:
    """``-c /dev/stdin``: opening a FIFO without a writer blocks (the event loop with it)."""
    fifo = tmp_path / "synapse.json"
    os.mkfifo(fifo)
    assert not whole_json_file(fifo, stamps([fifo])[fifo])


@pytest.mark.parametrize("kernel", ["a writer has it open", "will not say"])
async def test_a_whole_json_file_a_writer_may_have_open_still_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kernel: str
) -> None:
    """An overwrite without truncating (``r+``) paused between its writes: its new head on
    the old tail is a JSON object neither version is. Review s45: with no lease to ask (the
    daemon not the file's owner), a real synapse applied that mix and kept it."""
    waits: list[list[Path]] = []

    async def wait_still(paths: list[Path]) -> tuple[float, bool]:
        waits.append(paths)
        return 0.0, True

    monkeypatch.setattr(reload_settle, "wait_still", wait_still)
    if kernel == "will not say":
        monkeypatch.setattr(config_read, "open_for_writing", lambda fd: None)
    path = tmp_path / "synapse.json"
    path.write_text('{"a": 1, "b": 22}')
    old = time.time() - 30
    os.utime(path, (old, old))
    last = file_stamps(path, [])
    with path.open("r+") as writer:
        writer.write('{"a": 2')  # then a pause; '{"a": 2, "b": 3}' was to follow
        writer.flush()
        if kernel == "will not say":
            writer.close()
        assert config_read.whole_json(path.read_text())  # {"a": 2, "b": 22}
        assert await hold_fresh_write(path, [], last, logging.getLogger("t"), stamps([path]))
    assert len(waits) == 1
