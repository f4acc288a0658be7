"""The config file's background writer: latest text wins, flush waits, failures say so."""

from __future__ import annotations

from pathlib import Path

import pytest

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
