"""`python -m bench --quick`: every benchmark runs end to end at tiny size.

Real ZooKeeper, etcd, HAProxy, nerve, synapse and wrk, as `make bench` uses them. Only
that the scripts work and report is checked: no figure is judged (no timing assertion).

The benchmarks run in two `python -m bench` processes at once: each one mostly waits
(registries starting, changes propagating, outages timed), and one after the other they
were the suite's slowest test (150-190 s of the 30-minute budget). Quick figures mean
nothing, so sharing the cores costs this test nothing it checks.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from at_once import run_at_once

from bench.__main__ import BENCHMARKS, OPT_IN

REPO = Path(__file__).resolve().parents[3]
# Two halves of about the same length (quick, on 2 cores: fleet ~45 s, the others 10-20 s).
FIRST_HALF = ("fleet", "nerve", "failure", "scale")


def halves() -> list[list[str]]:
    every = [name for name in BENCHMARKS if name not in OPT_IN]
    first = [name for name in every if name in FIRST_HALF]
    return [first, [name for name in every if name not in FIRST_HALF]]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_every_benchmark_runs_quick_and_writes_its_json(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "bench", "--quick", "--results-dir", str(tmp_path)]
    logs = [tmp_path / f"half-{index}.log" for index in range(2)]
    codes = run_at_once([[*command, *names] for names in halves()], logs, REPO, timeout=580)
    outputs = [log.read_text() for log in logs]
    for code, output in zip(codes, outputs, strict=True):
        assert code == 0, output[-6000:]
    output = "".join(outputs)
    for name in (n for n in BENCHMARKS if n not in OPT_IN):
        assert f"== {name} ==" in output, output[-6000:]
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


def test_the_halves_hold_every_benchmark_once() -> None:
    names = [name for half in halves() for name in half]
    assert sorted(names) == sorted(n for n in BENCHMARKS if n not in OPT_IN)
    assert all(halves()), "a half with no benchmark runs them all (bench's default)"
