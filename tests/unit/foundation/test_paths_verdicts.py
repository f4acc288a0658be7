"""The path check's verdicts (review s29): a read-only filesystem is the host's state of
this moment, which the running daemons survive, so neither a start nor ``-k`` (the units'
ExecStartPre) refuses it; a wrong path stays an error; a permission problem is an error
for ``synapse -k`` only. Before: synapse exited 2 at a start on a read-only state, config
or socket directory, and both daemons' ``-k`` exited 2 on one."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest

import nerve.preflight
import smartstack.paths_check as paths_check
from smartstack.paths_check import CONFIG, PERMISSION, READ_ONLY, READ_ONLY_MOUNT, diagnose
from synapse.haproxy.installer import start_blocked
from synapse.preflight import path_verdicts

CFG = Path("/etc/smartstack/synapse.yaml")


@pytest.fixture
def read_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``tmp_path/ro`` as statvfs reports a filesystem the kernel remounted read-only."""
    ro = tmp_path / "ro"
    ro.mkdir()
    real = os.statvfs

    class Result:
        def __init__(self, path: os.PathLike[str] | str) -> None:
            self.f_flag = real(path).f_flag | (os.ST_RDONLY if Path(path) == ro else 0)

    monkeypatch.setattr(paths_check.os, "statvfs", Result)
    return ro


def problems(tmp_path: Path, read_only: Path) -> list[paths_check.PathProblem]:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    return paths_check.path_problems(
        {
            "haproxy.state_file_path": read_only / "state.json",
            "haproxy.server_state_file": blocker / "sst",
            "haproxy.config_file_path": tmp_path / "fine" / "haproxy.cfg",
        }
    )


def test_kinds(tmp_path: Path, read_only: Path) -> None:
    said = f"directory {read_only} is on a read-only filesystem"
    assert diagnose(read_only / "x") == (said, READ_ONLY)
    (tmp_path / "file").write_text("x")
    assert diagnose(tmp_path / "file" / "x") == (f"{tmp_path / 'file'} is not a directory", CONFIG)
    assert diagnose(tmp_path / "nope" / "s.sock", create=False)[1] == CONFIG  # type: ignore[index]
    assert diagnose(tmp_path / "x") is None


def test_synapse_starts_on_a_read_only_filesystem_and_says_so(
    tmp_path: Path, read_only: Path, caplog: pytest.LogCaptureFixture
) -> None:
    errors, notes = path_verdicts(problems(tmp_path, read_only), CFG, full=False)
    # the wrong path (below a file) still stops the start; the read-only one does not
    assert errors == [
        f"{CFG}: haproxy.server_state_file: cannot write {tmp_path}/file/sst: "
        f"{tmp_path}/file is not a directory"
    ]
    assert notes == []
    [record] = [r for r in caplog.records if r.getMessage() == "start_path_unwritable"]
    assert record.levelname == "WARNING"
    fields = record.__dict__["smartstack_fields"]
    assert fields["key"] == "haproxy.state_file_path" and fields["error"] == "EROFS"
    assert fields["path"] == f"{read_only}/state.json"


def test_synapse_check_notes_a_read_only_filesystem(tmp_path: Path, read_only: Path) -> None:
    errors, notes = path_verdicts(problems(tmp_path, read_only), CFG, full=True)
    assert len(errors) == 1 and "haproxy.server_state_file" in errors[0]
    [note] = notes
    assert note.startswith(f"{CFG}: haproxy.state_file_path: cannot write {read_only}/state.json")
    assert "read-only filesystem" in note


def test_synapse_check_refuses_a_permission_problem_a_start_does_not(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    denied = paths_check.PathProblem(
        "haproxy.state_file_path", tmp_path / "s", "denied", PERMISSION
    )
    assert path_verdicts([denied], CFG, full=True) == ([denied.line(CFG)], [])
    assert path_verdicts([denied], CFG, full=False) == ([], [])
    [record] = [r for r in caplog.records if r.getMessage() == "start_path_unwritable"]
    assert record.__dict__["smartstack_fields"]["error"] == "EACCES"


def test_nerve_check_notes_a_read_only_heartbeat_dir_and_refuses_a_missing_one(
    tmp_path: Path, read_only: Path
) -> None:
    config = SimpleNamespace(state_dir=str(read_only), heartbeat_path=str(read_only / "beat"))
    errors, notes = nerve.preflight.preflight(config, tmp_path / "n.yaml", full=True)  # type: ignore[arg-type]
    assert errors == [] and len(notes) == 2  # state_dir and heartbeat_path: notes
    config.heartbeat_path = str(tmp_path / "missing" / "beat")
    errors, notes = nerve.preflight.preflight(config, tmp_path / "n.yaml", full=True)  # type: ignore[arg-type]
    assert len(errors) == 1 and "heartbeat_path" in errors[0] and "does not exist" in errors[0]


def test_a_managed_start_is_not_tried_while_its_socket_dir_is_read_only(
    tmp_path: Path, read_only: Path
) -> None:
    """(HAProxy would exit at once: it cannot make its master socket.) Retried every few
    seconds instead, and said on /health."""
    settings = SimpleNamespace(
        master_socket=read_only / "m.sock", pid_file=None, shared_sockets=(), launch=True
    )
    said = start_blocked(settings)  # type: ignore[arg-type]
    assert said and said.startswith(f"cannot make {read_only}/m.sock: directory {read_only} is")
    assert said.endswith("is on a read-only filesystem")
    settings.master_socket = tmp_path / "m.sock"
    assert start_blocked(settings) is None  # type: ignore[arg-type]


def test_a_read_only_mount_of_a_writable_fs_is_an_error_at_check_only(
    tmp_path: Path, read_only: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """(review s29 MEDIUM-1) a read-only bind mount: the deployment's, refused by ``-k``
    like a permission problem, logged at a start that goes on; a managed HAProxy's start
    is held as on a read-only filesystem. Before: a note, ``-k`` passed."""
    monkeypatch.setattr(paths_check, "read_only_mount_of_writable_fs", lambda d: str(d))
    found = diagnose(read_only / "sub" / "x")
    assert found == (f"directory {read_only} is on a read-only mount ({read_only}) of a "
                     "writable filesystem", READ_ONLY_MOUNT)  # fmt: skip
    listed = paths_check.path_problems({"haproxy.state_file_path": read_only / "s.json"})
    errors, notes = path_verdicts(listed, CFG, full=True)
    assert len(errors) == 1 and notes == []
    assert path_verdicts(listed, CFG, full=False) == ([], [])
    settings = SimpleNamespace(
        master_socket=read_only / "m.sock", pid_file=None, shared_sockets=(), launch=True
    )
    assert "of a writable filesystem" in (start_blocked(settings) or "")  # type: ignore[arg-type]


def test_a_launched_start_is_held_when_its_missing_socket_dir_cannot_be_made(
    tmp_path: Path, read_only: Path
) -> None:
    """(review s34 cr) synapse makes the missing socket directory of the HAProxy it starts
    (``make_dirs``), so one under a read-only (or not writable) directory is as unusable as a
    read-only one: held and said on /health, not an HAProxy start failing at every try
    (`haproxy_dir_not_created` + 6 HAProxy lines a try, 5 tries in 60 s). Before: not held."""
    settings = SimpleNamespace(master_socket=read_only / "run" / "m.sock", pid_file=None,
                               shared_sockets=(), launch=True)  # fmt: skip
    assert "is on a read-only filesystem" in (start_blocked(settings) or "")  # type: ignore[arg-type]
    settings.master_socket = tmp_path / "run" / "m.sock"  # (made at the start: not held)
    assert start_blocked(settings) is None  # type: ignore[arg-type]
    settings.launch, settings.master_socket = False, read_only / "run" / "m.sock"
    assert start_blocked(settings) is None  # type: ignore[arg-type]  # (nobody makes it: -k's)
