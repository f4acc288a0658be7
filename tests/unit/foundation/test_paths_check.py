"""The preflight's directory check when an ancestor cannot be searched (a config-management
run chmods /var/lib/smartstack 0700 and the daemon runs unprivileged): one problem line,
never a PermissionError out of ``Path.exists`` (Python 3.11 raises it for EACCES)."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from nerve.preflight import preflight
from smartstack.paths_check import directory_problem, writable_problems


@pytest.fixture
def unsearchable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``tmp_path/lib`` as an unprivileged user sees it after ``chmod 0700`` by root: what
    lies below it cannot be stat'ed (simulated: the tests may run as root)."""
    lib = tmp_path / "lib"
    (lib / "nerve").mkdir(parents=True)
    real_stat = Path.stat

    def stat(self: Path, *, follow_symlinks: bool = True) -> os.stat_result:
        if lib in self.parents:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return real_stat(self, follow_symlinks=follow_symlinks)

    monkeypatch.setattr(Path, "stat", stat)
    return lib


def test_an_unsearchable_ancestor_is_a_problem_not_a_crash(unsearchable: Path) -> None:
    problem = directory_problem(unsearchable / "nerve" / "x.json")
    assert problem == f"cannot inspect {unsearchable / 'nerve'}: Permission denied"
    # a file HAProxy opens (no directory made for it): the same, not a traceback
    problem = directory_problem(unsearchable / "nerve" / "sock", create=False)
    assert problem == f"cannot inspect {unsearchable / 'nerve'}: Permission denied"


def test_synapse_gets_its_one_line_error(unsearchable: Path) -> None:
    cfg = Path("/etc/synapse.yaml")
    lines = writable_problems(cfg, {"haproxy.config_file_path": unsearchable / "syn" / "h.cfg"})
    assert lines == [
        f"{cfg}: haproxy.config_file_path: cannot write {unsearchable / 'syn' / 'h.cfg'}: "
        f"cannot inspect {unsearchable / 'syn'}: Permission denied"
    ]


def test_nerve_goes_on_at_start_and_notes_state_dir_at_check(
    unsearchable: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = SimpleNamespace(state_dir=str(unsearchable / "nerve"), heartbeat_path=None)
    errors, notes = preflight(config, unsearchable.parent / "nerve.json", full=False)  # type: ignore[arg-type]
    assert (errors, notes) == ([], [])  # at start: logged, and nerve goes on
    [record] = [r for r in caplog.records if r.getMessage() == "start_path_unwritable"]
    assert record.levelname == "WARNING"
    # -k (the unit's ExecStartPre): state_dir only holds maintenance flags, a note
    errors, notes = preflight(config, unsearchable.parent / "nerve.json", full=True)  # type: ignore[arg-type]
    assert errors == [] and len(notes) == 1 and "state_dir: cannot write" in notes[0]
    assert f"cannot inspect {unsearchable / 'nerve'}: Permission denied" in notes[0]
