"""`python -m bench --quick`: every benchmark runs end to end at tiny size.

Real ZooKeeper, etcd, HAProxy, nerve, synapse and wrk, as `make bench` uses them. Only
that the scripts work and report is checked: no figure is judged (no timing assertion).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.__main__ import BENCHMARKS, OPT_IN

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_every_benchmark_runs_quick_and_writes_its_json(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--results-dir", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=580,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    for name in (n for n in BENCHMARKS if n not in OPT_IN):
        assert f"== {name} ==" in proc.stdout, output[-6000:]
        data = json.loads((tmp_path / f"{name}.json").read_text())
        assert data["quick"] is True and data["machine"]["nproc"] >= 1
        assert data["versions"]["haproxy"], data["versions"]
        assert data["sections"], f"{name} reported no section"
        for section in data["sections"]:
            assert section["rows"], f"{name}/{section['title']} has no rows"
            for row in section["rows"]:
                # A figure that has a target must be a number (a missing figure is a bug).
                if row["target"] is not None:
                    assert isinstance(row["value"], int | float), (name, row)
