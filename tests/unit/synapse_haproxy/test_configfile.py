"""The config file's background writer: latest text wins, flush waits, failures say so."""

from __future__ import annotations

import asyncio
import errno
from pathlib import Path

import pytest

from synapse.haproxy import configfile
from synapse.haproxy.configfile import ConfigFile


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
    attempts: list[Path] = []
    full = True

    def write(path: Path, parts: tuple[str, ...]) -> None:
        attempts.append(path)
        if full:
            raise OSError(errno.ENOSPC, "No space left on device")
        path.write_text("".join(parts))

    monkeypatch.setattr(configfile, "_write_parts", write)
    monkeypatch.setattr(configfile, "RETRY_DELAYS", (30.0,))
    file = ConfigFile(tmp_path / "haproxy.cfg")
    file.set(("global\n",))
    with pytest.raises(OSError, match="No space left"):
        await file.flush()
    assert len(attempts) == 1  # the writer now waits 30 s before its next attempt
    async with asyncio.timeout(2.0):  # (the old writer answered after its 30 s)
        with pytest.raises(OSError, match="No space left"):
            await file.flush()
    assert len(attempts) == 2
    await asyncio.sleep(0.2)
    assert len(attempts) == 2, "after the flush's attempt the writer waits again"
    full = False
    async with asyncio.timeout(2.0):
        await file.flush()
    assert (tmp_path / "haproxy.cfg").read_text() == "global\n" and file.error is None
    await file.close()
