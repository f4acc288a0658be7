"""How early a started daemon survives a SIGHUP (smartstack.early_signals).

The first statement of nerve.cli and synapse.cli holds SIGHUP; before, it was held only
after their imports (asyncio, logging, the config's path: median ~0.25 s after exec on 2
cores, up to 1.1 s at load 16), and a SIGHUP 5, 20 or 50 ms after start killed both daemons. What
is left is the interpreter's own start: the image's entrypoint ignores SIGHUP across it
(tini passes a `docker kill -s HUP` on at once), systemd waits for READY=1
(tests/integration/foundation/test_sd_notify.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from start_window import (
    DAEMONS,
    STARTED,
    VENV_BIN,
    daemon_config,
    daemon_process,
    sighup_disposition,
)

from testbed.process import ManagedProcess, wait_until

ROOT = Path(__file__).resolve().parents[3]
ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"
HOLD_MODULE = "smartstack.early_signals"
EVERY_S = 0.01


def log(proc: ManagedProcess) -> str:
    return proc.log_path.read_text(errors="replace")


def imported_after_hold_module(text: str) -> bool:
    """PYTHONPROFILEIMPORTTIME=1: a line per import, written as it ends. One after
    smartstack.early_signals' own line comes from the statements after that import."""
    names = [line.rsplit("|", 1)[1].strip() for line in text.splitlines() if "import time:" in line]
    return HOLD_MODULE in names and names.index(HOLD_MODULE) < len(names) - 1


def test_hold_module_imports_nothing_but_signal() -> None:
    """It is imported first of all: each import of its own would keep SIGHUP fatal longer
    (asyncio alone ~20-250 ms). The interpreter's start (site, the editable install's
    finder) imports the same with or without it."""

    def imported(code: str) -> set[str]:
        done = subprocess.run([str(VENV_BIN / "python"), "-X", "importtime", "-c", code],
                              capture_output=True, text=True, timeout=60, cwd=ROOT)  # fmt: skip
        assert done.returncode == 0, done.stderr
        lines = [line for line in done.stderr.splitlines() if line.startswith("import time:")]
        return {line.rsplit("|", 1)[1].strip() for line in lines[1:]}  # (the header first)

    extra = imported(f"import {HOLD_MODULE}") - imported("pass")
    assert extra <= {"smartstack", HOLD_MODULE, "signal"}, sorted(extra)


@pytest.mark.parametrize("name", DAEMONS)
def test_sighup_during_the_cli_modules_imports_is_kept(name: str, tmp_path: Path) -> None:
    """A SIGHUP as soon as the cli module goes on after importing smartstack.early_signals
    (its imports, 0.2-0.5 s, still ahead; the old code died of it) is noted and the daemon runs
    (nerve applies it once its loop runs; synapse reads the file at start anyway)."""
    config = daemon_config(name, tmp_path)
    proc = daemon_process(name, config, tmp_path, {"PYTHONPROFILEIMPORTTIME": "1"}).start()
    try:
        wait_until(lambda: imported_after_hold_module(log(proc)), 30,
                   interval=0.0005, what=f"{name} past its import of {HOLD_MODULE}")  # fmt: skip
        os.kill(proc.pid, signal.SIGHUP)
        wait_until(lambda: proc.check_alive() or STARTED[name] in log(proc), 30,
                   what=f"{name} to start")  # fmt: skip
        if name == "nerve":
            wait_until(lambda: proc.check_alive() or "config_reloaded" in log(proc),
                       30, what="nerve to apply the SIGHUP it kept")  # fmt: skip
        time.sleep(0.3)
        proc.check_alive()
    finally:
        proc.stop(timeout=10)


@pytest.mark.parametrize("name", DAEMONS)
def test_the_image_entrypoint_keeps_sighup_from_ending_a_starting_daemon(
    name: str, tmp_path: Path
) -> None:
    """docker/entrypoint.sh ignores SIGHUP first; it stays ignored across exec into the
    daemon until its cli module holds it. SIGHUPs every 10 ms from then until the daemon
    runs: it must come up (the old entrypoint left SIGHUP fatal for ~0.2-0.3 s)."""
    config = daemon_config(name, tmp_path)
    env = {"PATH": f"{VENV_BIN}:{os.environ['PATH']}"}
    command = ["/bin/sh", str(ENTRYPOINT), name]
    proc = daemon_process(name, config, tmp_path, env, command).start()
    try:
        wait_until(lambda: sighup_disposition(proc.pid)[1], 10, interval=0.0002,
                   what="the entrypoint to ignore SIGHUP")  # fmt: skip
        deadline = time.monotonic() + 30
        while STARTED[name] not in log(proc) and time.monotonic() < deadline:
            proc.check_alive()
            os.kill(proc.pid, signal.SIGHUP)
            time.sleep(EVERY_S)
        assert STARTED[name] in log(proc), proc.describe_failure()
        time.sleep(0.3)
        proc.check_alive()
    finally:
        proc.stop(timeout=10)
