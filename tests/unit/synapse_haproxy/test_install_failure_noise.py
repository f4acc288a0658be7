"""A read-only config directory fails every retried reload the same way (review s29
LOW-1): said once a streak, not once a retry. Before: `haproxy_reload_failed` named the
marker's temporary file (another name every retry, so never "the same error") and
`haproxy_state_dump_failed` was a WARNING each time: 13 + 13 lines in 60 s, ~1,560/h."""

from __future__ import annotations

import errno
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from smartstack.logs import Streak
from synapse.haproxy import installer
from synapse.haproxy.installer import Installer, InstallFailed


def erofs(*_: Any) -> None:
    raise OSError(errno.EROFS, "Read-only file system", "/ro/.haproxy.state.x1y2z3.tmp")


async def test_a_failing_state_dump_is_a_warning_once_a_streak(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(installer, "write_atomic", erofs)
    monkeypatch.setattr(installer, "remove_state_file", erofs)
    state = tmp_path / "haproxy.state"
    fake = SimpleNamespace(settings=SimpleNamespace(state_file=state), runtime=[],
                           read_all=False, _dump_streak=Streak())  # fmt: skip
    caplog.set_level(logging.DEBUG, "synapse.haproxy")
    for _ in range(5):
        await Installer.dump_server_state(fake, runtime_ok=False)  # type: ignore[arg-type]
    said = [r.levelno for r in caplog.records if "haproxy_state_dump_failed" in r.getMessage()]
    assert said == [logging.WARNING] + [logging.DEBUG] * 4
    assert fake.read_all  # (the old file could not go: every backend read after the reload)


async def test_an_unwritable_marker_fails_without_its_temporary_files_name() -> None:
    async def installing() -> None:
        erofs()

    fake = SimpleNamespace(file=SimpleNamespace(text="", parsed=None), layout=None,
                           mark=SimpleNamespace(path=Path("/ro/haproxy.cfg.loaded"),
                                                installing=installing))  # fmt: skip
    with pytest.raises(InstallFailed) as failed:
        await Installer.install(fake, None, None)  # type: ignore[arg-type]
    assert str(failed.value) == "cannot write /ro/haproxy.cfg.loaded: Read-only file system"


async def test_a_restart_from_the_file_is_not_tried_while_a_start_is_blocked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review s29 LOW-2: after a crash with the socket directory read-only, the revive ran
    HAProxy (4 [ALERT] lines, haproxy_start_failed); the reload gate's install holds it and
    says why (`cannot start HAProxy: ...`), retried every 5 s."""
    monkeypatch.setattr(installer, "start_blocked", lambda settings: "cannot make /ro/m.sock")
    started: list[str] = []

    async def start() -> None:
        started.append("start")

    async def nothing() -> None:
        return None

    config = tmp_path / "haproxy.cfg"
    config.write_text("global\n")
    file = SimpleNamespace(exists=True, flush=nothing, path=config)
    managed = SimpleNamespace(alive=False, start=start)
    edge = SimpleNamespace(refused=lambda: None)
    fake = SimpleNamespace(managed=managed, settings=None, file=file, edge=edge, _confirmed=nothing)
    assert await Installer.start_from_file(fake) is False  # type: ignore[arg-type]
    assert started == []
