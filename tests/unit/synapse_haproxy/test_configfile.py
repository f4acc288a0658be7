"""The config file's background writer: latest text wins, flush waits, failures say so."""

from __future__ import annotations

import asyncio
import errno
import logging
from pathlib import Path

import pytest

from synapse.haproxy import configfile
from synapse.haproxy.configfile import ConfigFile


class FullDisk:
    """The config file's writer on a disk that is full while ``full``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.full = True
        self.attempts: list[Path] = []
        monkeypatch.setattr(configfile, "_write_parts", self.write)

    def write(self, path: Path, parts: tuple[str, ...]) -> None:
        self.attempts.append(path)
        if self.full:
            raise OSError(errno.ENOSPC, "No space left on device")
        path.write_text("".join(parts))


async def test_writes_in_the_background_and_flush_waits(tmp_path: Path):
    path = tmp_path / "haproxy.cfg"
    path.write_text("global\n")
    file = ConfigFile(path)
    await file.load()
    assert file.exists and file.text == "global\n"
    assert not file.set(("glo", "bal\n"))  # same text, other cut: nothing to write
    assert file.set(("global\n", "  maxconn 1\n"))
    assert file.set(("global\n", "  maxconn 2\n"))  # the latest wins
    assert file.text == "global\n  maxconn 2\n"
    assert file.parsed is not None and file.parsed.sections["global"] == ("maxconn 2",)
    await file.flush()
    assert path.read_text() == "global\n  maxconn 2\n" and file.writes <= 2
    assert not file.set(("global\n", "  maxconn 2\n"))


async def test_a_failed_write_raises_on_flush_and_is_retried(tmp_path: Path):
    blocker = tmp_path / "conf"
    blocker.write_text("a file where the directory should be")
    file = ConfigFile(blocker / "haproxy.cfg")
    await file.load()
    assert not file.exists
    file.set(("global\n",))
    with pytest.raises(OSError, match="cannot write"):
        await file.flush()
    assert file.error
    blocker.unlink()
    blocker.mkdir()
    await file.close()  # the writer keeps trying and gets it written
    assert (blocker / "haproxy.cfg").read_text() == "global\n" and file.error is None


async def test_a_flush_after_failed_writes_tries_again_at_once(tmp_path, monkeypatch):
    """A full disk: the writer waits its retry delay between attempts, but a flush (a
    crashed HAProxy's restart) must not wait for it to learn the disk is still full."""
    disk = FullDisk(monkeypatch)
    monkeypatch.setattr(configfile, "RETRY_DELAYS", (30.0,))
    file = ConfigFile(tmp_path / "haproxy.cfg")
    file.set(("global\n",))
    with pytest.raises(OSError, match="No space left"):
        await file.flush()
    assert len(disk.attempts) == 1  # the writer now waits 30 s before its next attempt
    async with asyncio.timeout(2.0):  # (the old writer answered after its 30 s)
        with pytest.raises(OSError, match="No space left"):
            await file.flush()
    assert len(disk.attempts) == 2
    await asyncio.sleep(0.2)
    assert len(disk.attempts) == 2, "after the flush's attempt the writer waits again"
    disk.full = False
    async with asyncio.timeout(2.0):
        await file.flush()
    assert (tmp_path / "haproxy.cfg").read_text() == "global\n" and file.error is None
    await file.close()


async def test_a_failing_streak_is_said_once_and_its_end_once(tmp_path, monkeypatch, caplog):
    """Review s29: ``haproxy_config_write_failed`` was logged at error on every retry (every
    5 s on a full disk, the log often on it), and nothing said the end."""
    disk = FullDisk(monkeypatch)
    monkeypatch.setattr(configfile, "RETRY_DELAYS", (0.01,))
    file = ConfigFile(tmp_path / "haproxy.cfg")
    with caplog.at_level(logging.INFO, logger="synapse.haproxy"):
        file.set(("global\n",))
        await asyncio.sleep(0.3)  # ~30 attempts
        said = [r.getMessage() for r in caplog.records]
        assert said.count("haproxy_config_write_failed") == 1, "once, not per retry"
        assert file.streak.count > 5
        [line] = file.streak.degraded("haproxy config file", "it lags")
        assert "ENOSPC" in line and str(tmp_path / "haproxy.cfg") in line
        disk.full = False
        async with asyncio.timeout(2.0):
            await file.flush()
    said = [r.getMessage() for r in caplog.records]
    assert said.count("haproxy_config_write_failed") == 1, said
    assert said.count("haproxy_config_write_recovered") == 1, said
    assert file.streak.degraded("haproxy config file", "it lags") == []
    await file.close()
