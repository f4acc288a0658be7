"""Maintenance flags when ``state_dir`` fails (review s21): a directory nerve's user cannot
search (a config-management run chowned it root 0700) must not withdraw a healthy
registration nor keep it out once repaired; a flag file a full or read-only disk refuses
is in force at once, retried every round, and said so in the admin API's answer.

(The tests may run as root, which ignores permissions: EACCES and the disk's refusals are
simulated at the Path/os calls nerve makes.)"""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

import pytest
from nerve_fakes import Recorder

from nerve import control
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


# --- finding 5: flag files a full or read-only disk refuses ---------------------------------


def refuse(monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    """The disk refuses writes (ENOSPC: a full disk, which leaves what was written of the
    temporary file; EROFS: read-only, which refuses removals too)."""
    write_text = Path.write_text

    def write(self: Path, data: str, *args: object, **kwargs: object) -> int:
        if code == errno.ENOSPC:
            write_text(self, data[:3], *args, **kwargs)  # type: ignore[arg-type]
        raise OSError(code, os.strerror(code), str(self))

    def unlink(self: Path, missing_ok: bool = False) -> None:
        raise OSError(code, os.strerror(code), str(self))

    monkeypatch.setattr(Path, "write_text", write)
    if code == errno.EROFS:
        monkeypatch.setattr(Path, "unlink", unlink)


async def test_a_maint_a_full_disk_refuses_holds_and_is_written_once_it_can(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: the answer said nothing, a truncated web.tmp stayed, and a restart after
    the disk was freed registered the instance again (the maintenance lost)."""
    store = MaintenanceStore(tmp_path)
    service, reporter = web(store, registered=True)
    refuse(monkeypatch, errno.ENOSPC)
    with caplog.at_level(logging.INFO, logger="nerve.maintenance"):
        service.enter_maintenance("bad canary")
        assert reporter.decisions == [False]  # in force at once
        assert sorted(os.listdir(tmp_path)) == []  # no truncated web.tmp left
        assert (
            store.persist_error("web")
            == f"[Errno 28] No space left on device: '{tmp_path / 'web.tmp'}'"
        )
        await service.run_round()
        await service.run_round()
        assert MaintenanceStore(tmp_path).load("web") is None  # a restart now would lose it
        monkeypatch.undo()  # the disk was freed
        await service.run_round()
    assert store.persist_error("web") is None
    assert MaintenanceStore(tmp_path).load("web").reason == "bad canary"  # type: ignore[union-attr]
    assert len(logged(caplog, "maintenance_flag_not_saved")) == 1  # once per streak
    assert logged(caplog, "maintenance_flag_saved") == [{"service": "web"}]
    assert reporter.decisions == [False]


async def test_an_up_a_read_only_disk_refuses_holds_and_the_stale_file_is_not_read_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: `up` answered "ended the maintenance", the file stayed, and the restart
    after the repair withdrew the healthy instance again."""
    store = MaintenanceStore(tmp_path)
    service, reporter = web(store, registered=True)
    service.enter_maintenance("disk swap")
    assert (tmp_path / "web.json").exists()
    refuse(monkeypatch, errno.EROFS)
    with caplog.at_level(logging.INFO, logger="nerve.maintenance"):
        service.leave_maintenance()
        for _ in range(3):
            await service.run_round()
        assert store.load("web") is None and service.status()["maintenance"] is None
        assert reporter.decisions == [False, True]  # the stale file is not read back
        assert (
            store.persist_error("web")
            == f"[Errno 30] Read-only file system: '{tmp_path / 'web.json'}'"
        )
        monkeypatch.undo()  # writable again (the remount, or the reboot that fixed it)
        await service.run_round()
    assert not (tmp_path / "web.json").exists() and store.persist_error("web") is None
    assert MaintenanceStore(tmp_path).load("web") is None  # a restart keeps it registered
    assert len(logged(caplog, "maintenance_flag_not_removed")) == 1
    assert logged(caplog, "maintenance_flag_removed") == [{"service": "web"}]
    assert reporter.decisions == [False, True]


def test_an_up_on_a_read_only_disk_without_a_flag_file_is_persisted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read-only filesystem refuses to unlink even a file that is not there (EROFS):
    nothing lags then."""
    store = MaintenanceStore(tmp_path)
    monkeypatch.setattr(Path, "unlink", lambda self, missing_ok=False: (_ for _ in ()).throw(
        OSError(errno.EROFS, "Read-only file system", str(self))))  # fmt: skip
    assert store.clear("web") and store.persist_error("web") is None


@pytest.mark.parametrize("command", ["maint", "up"])
def test_the_commands_warn_when_the_flag_file_lags(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    """Exit 0 (the change is in force, as for synapse's zone commands) with a warning."""
    flag = {"reason": "x", "since": 1.0, "until": None} if command == "maint" else None
    answer = {"service": "web", "wanted": command == "up", "registered": command == "up",
              "maintenance": flag, "persisted": False,
              "persist_error": "[Errno 30] Read-only file system"}  # fmt: skip
    monkeypatch.setattr(control, "call", lambda *args, **kwargs: answer)
    argv = [command, "web", "--admin", "http://127.0.0.1:1"]
    assert control.main(argv + (["--reason", "x"] if command == "maint" else [])) == 0
    err = capsys.readouterr().err
    verb = "written" if command == "maint" else "removed"
    assert err.startswith(f"warning: web: the maintenance flag file could not be {verb} ")
    assert "Read-only file system" in err and "restart" in err
    answer["persisted"] = True
    control.main(argv + (["--reason", "x"] if command == "maint" else []))
    assert capsys.readouterr().err == ""
