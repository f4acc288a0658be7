"""Maintenance flags when ``state_dir`` fails (review s21): a directory nerve's user cannot
search (a config-management run chowned it root 0700) must not withdraw a healthy
registration nor keep it out once repaired.

(The tests may run as root, which ignores permissions: EACCES is simulated at the Path/os
calls nerve makes.)"""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

import pytest
from nerve_fakes import Recorder

from nerve.checks.base import BaseCheck, Passed
from nerve.maintenance import UNKNOWN, MaintenanceFlag, MaintenanceStore
from nerve.service import Service
from smartstack.logs import _FIELDS as FIELDS


class Up(BaseCheck):
    type = "up"

    def __init__(self) -> None:
        super().__init__("up", 1.0)

    async def probe(self) -> Passed:
        return Passed("ok")


def logged(caplog: pytest.LogCaptureFixture, name: str) -> list[dict[str, object]]:
    return [vars(r).get(FIELDS, {}) for r in caplog.records if r.getMessage() == name]


def deny(monkeypatch: pytest.MonkeyPatch, directory: Path) -> None:
    """``directory`` as nerve's user sees it once root chowned it 0700: nothing in it can
    be read nor stat'ed (EACCES), so nerve cannot tell whether a flag file is there."""
    read_text, lstat = Path.read_text, os.lstat

    def denied(path: object) -> bool:
        return Path(os.fspath(path)).parent == directory  # type: ignore[arg-type]

    def read(self: Path, *args: object, **kwargs: object) -> str:
        if denied(self):
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return read_text(self, *args, **kwargs)  # type: ignore[arg-type]

    def stat(path: object, *args: object, **kwargs: object) -> os.stat_result:
        if denied(path):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return lstat(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "read_text", read)
    monkeypatch.setattr(os, "lstat", stat)


def web(store: MaintenanceStore, registered: bool) -> tuple[Service, Recorder]:
    """A healthy service; ``registered``: built by a SIGHUP from a registered one (its
    reporter kept), else at nerve's start."""
    reporter = Recorder()
    reporter.holding = False
    reporter.desired = registered
    service = Service("web", [Up()], [(1, 1)], reporter, initially_up=registered,
                      maintenance=store)  # fmt: skip
    return service, reporter


# --- finding 2: state_dir nerve cannot search ---------------------------------------------


async def test_a_sighup_does_not_withdraw_when_state_dir_cannot_be_searched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: the reload's new Service took "unreadable flag file" (cached for good) as a
    maintenance and withdrew the healthy instance; it stayed out after the repair."""
    store = MaintenanceStore(tmp_path)
    deny(monkeypatch, tmp_path)
    with caplog.at_level(logging.INFO, logger="nerve.maintenance"):
        assert store.load("web") is UNKNOWN
        service, reporter = web(store, registered=True)
        for _ in range(3):
            await service.run_round()
        assert reporter.decisions == [] and service.state.registered
        assert service.status()["maintenance"] is None and not service.state.maintenance
        monkeypatch.undo()  # permissions restored
        await service.run_round()
    assert reporter.decisions == [] and service.state.registered
    assert [e["detail"] for e in logged(caplog, "maintenance_flag_unknown")] == [
        "nerve cannot tell whether the file is there: read again every round"
    ]  # once per streak
    assert logged(caplog, "maintenance_flag_readable") == [
        {"service": "web", "file": str(tmp_path / "web.json"), "flag": "none"}
    ]
    assert not logged(caplog, "maintenance_flag_unreadable")


@pytest.mark.parametrize("flag", [None, "kernel upgrade"])
async def test_at_start_it_registers_once_state_dir_can_be_searched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flag: str | None
) -> None:
    """Before: never registered, even after the repair (until `nerve up`). Now it waits
    (a flag it cannot see may be an operator's), then follows the file."""
    if flag is not None:
        MaintenanceStore(tmp_path).save("web", MaintenanceFlag(flag, 1.0))
    deny(monkeypatch, tmp_path)
    service, reporter = web(MaintenanceStore(tmp_path), registered=False)
    for _ in range(3):
        await service.run_round()
    assert reporter.decisions == [] and not service.state.maintenance
    assert "maintenance flag can be read" in service.status()["reason"]
    monkeypatch.undo()
    await service.run_round()
    if flag is None:
        assert reporter.decisions == [True]
    else:
        assert reporter.decisions == [] and service.state.maintenance == {"admin": flag}


async def test_an_unreadable_flag_file_that_is_there_still_withdraws_and_is_read_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The file is there (its directory can be searched) but cannot be read or parsed:
    someone wanted the service out, so it stays out; read again every round, the file
    speaks once it reads (its flag), and a removed one ends the stand-in."""
    path = tmp_path / "web.json"
    path.write_text("{half a fl")  # e.g. written by hand, or mode 000 for nerve's user
    store = MaintenanceStore(tmp_path)
    service, reporter = web(store, registered=True)
    with caplog.at_level(logging.INFO, logger="nerve.maintenance"):
        await service.run_round()
        await service.run_round()
        assert reporter.decisions == [False]
        assert service.state.maintenance == {"admin": f"unreadable flag file {path}"}
        path.write_text('{"reason": "disk swap", "since": 5.0, "until": null}\n')
        await service.run_round()
        assert service.state.maintenance == {"admin": "disk swap"}  # its own reason now
        assert reporter.decisions == [False]
    assert len(logged(caplog, "maintenance_flag_unreadable")) == 1  # once per streak
    assert logged(caplog, "maintenance_flag_readable")[0]["flag"] == "disk swap"

    path.write_text("not json")  # another service, another broken file: removed by hand
    service, reporter = web(MaintenanceStore(tmp_path), registered=True)
    await service.run_round()
    assert reporter.decisions == [False]
    path.unlink()
    await service.run_round()
    assert reporter.decisions == [False, True] and not service.state.maintenance
