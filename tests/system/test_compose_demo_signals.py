"""`make compose-demo` cleans up on SIGTERM as on Ctrl-C (its private dockerd must not stay).

The demo's steps are replaced by a stand-in that blocks where the real one would wait for
docker; what is tested is scripts/compose_demo.main's signal handling, in a real process.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

STAND_IN = """
import sys, time
sys.path.insert(0, {scripts!r})
import compose_demo

class Demo:
    def __init__(self, keep):
        pass
    def engine(self):
        print("engine started", flush=True)
        time.sleep(60)
    def cleanup(self):
        open({marker!r}, "w").write("cleaned")

compose_demo.Demo = Demo
sys.exit(compose_demo.main([]))
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_signal_runs_the_cleanup(tmp_path: Path, signum: signal.Signals) -> None:
    marker = tmp_path / "cleaned"
    code = STAND_IN.format(scripts=str(ROOT / "scripts"), marker=str(marker))
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        assert proc.stdout is not None
        assert "engine started" in proc.stdout.readline()
        time.sleep(0.1)
        proc.send_signal(signum)
        out, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert marker.read_text() == "cleaned", out
    assert proc.returncode == 1
    assert f"interrupted ({signum.name})" in out
    assert "Traceback" not in out
