"""What a reboot leaves where a managed HAProxy binds its sockets.

A managed HAProxy's socket directory on a tmpfs that a reboot emptied (review s34): the
master socket, admin socket and pid file in ``/run/synapse/`` (what the docs advise when the
config directory's path is too long). synapse makes the directory before it starts HAProxy
(``replacement.make_dirs``), but the start's path check called it a wrong path and exited 2:
after the reboot synapse never started, 4,412 of 4,412 requests refused over 45 s
(/tmp/rev/s34/reboot/s1_stale_run.py runmissing), until someone ran ``mkdir``."""

from __future__ import annotations

import logging
from pathlib import Path

from synapse.config import SynapseConfig
from synapse.haproxy.replacement import make_dirs
from synapse.preflight import made_by_start, preflight, written_paths


def _config(tmp_path: Path, run: Path, **managed: object) -> SynapseConfig:
    return SynapseConfig.model_validate({
        "services": {"web": {"discovery": {"method": "base"}, "haproxy": {"port": 3300}}},
        "haproxy": {
            "config_file_path": str(tmp_path / "lib" / "haproxy.cfg"),
            "socket_file_path": str(run / "admin.sock"),
            "managed": {"master_socket_path": str(run / "master.sock"),
                        "pid_file": str(run / "haproxy.pid"), **managed},
        },
    })  # fmt: skip


def test_a_start_goes_on_when_the_emptied_run_dir_is_gone(tmp_path: Path) -> None:
    run = tmp_path / "run" / "synapse"  # (its parent exists and is writable: made at start)
    (tmp_path / "run").mkdir()
    errors, _ = preflight(_config(tmp_path, run), tmp_path / "synapse.yaml", full=False)
    assert errors == []


def test_a_socket_dir_nobody_makes_is_still_refused(tmp_path: Path) -> None:
    """With ``launch: false`` HAProxy's own container binds the sockets: synapse makes none."""
    run = tmp_path / "run" / "synapse"
    config = _config(tmp_path, run, launch=False)
    errors, _ = preflight(config, tmp_path / "synapse.yaml", full=False)
    assert errors and all("does not exist" in error for error in errors)
    assert any("master_socket_path" in error for error in errors)


def test_an_empty_directory_at_a_socket_path_goes_before_haproxy_starts(tmp_path, caplog):
    """Review s34: a directory at the master socket's path (docker makes one for a bind
    mount whose source is missing, e.g. after a reboot emptied /run) kept every HAProxy
    start failing ("error when trying to preserve previous UNIX socket (Operation not
    permitted)"): s1_stale_run.py dir_master, nothing served in 40 s, retried for good."""
    master, pid = tmp_path / "run" / "master.sock", tmp_path / "run" / "haproxy.pid"
    full = tmp_path / "run" / "admin.sock"
    for path in (master, pid, full):
        path.mkdir(parents=True)
    (full / "keep").write_text("x")  # (not empty: not ours to remove)
    with caplog.at_level(logging.INFO, logger="synapse.haproxy.managed"):
        make_dirs([master, pid, full])
    assert not master.exists() and not pid.exists() and (full / "keep").exists()
    said = {r.message: r.smartstack_fields["path"] for r in caplog.records}
    assert said["haproxy_path_is_a_directory"] == str(full)
    assert "haproxy_path_cleared" in said


def test_check_notes_what_the_start_makes_or_removes(tmp_path: Path) -> None:
    """(review s34 cr) no longer refused, a missing socket directory is made at start and an
    empty directory at a socket's path removed: a typo (`/rnu/synapse`, an existing directory
    another program uses given as the socket) must still show at `-k`. Before: `ok`, then the
    start made /rnu/synapse, or removed the other program's directory (its HAProxy then
    failed: "preserve previous UNIX socket (Not a directory)")."""
    run = tmp_path / "rnu" / "synapse"
    config = _config(tmp_path, run)
    paths = written_paths(config)
    notes = made_by_start(paths, tmp_path / "lib", tmp_path / "s.yaml")
    assert len(notes) == 3 and all(f"directory {run} does not exist" in n for n in notes)
    run.mkdir(parents=True)
    (run / "admin.sock").mkdir()  # (the operator's: an empty directory)
    notes = made_by_start(paths, tmp_path / "lib", tmp_path / "s.yaml")
    assert len(notes) == 1 and f"{run / 'admin.sock'} is a directory" in notes[0]
    (run / "admin.sock").rmdir()
    assert made_by_start(paths, tmp_path / "lib", tmp_path / "s.yaml") == []
