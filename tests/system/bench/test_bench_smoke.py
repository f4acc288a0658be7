"""`python -m bench --quick`: every benchmark runs end to end at tiny size.

Real ZooKeeper, etcd, HAProxy, nerve, synapse and wrk, as `make bench` uses them. Only
that the scripts work and report is checked: no figure is judged (no timing assertion).

The benchmarks run in four `python -m bench` processes at once: each one mostly waits
(registries starting, changes propagating, outages timed), and one after the other they
were the suite's slowest test (150-190 s of the 30-minute budget; 89-105 s in two).
Quick figures mean nothing, so sharing the cores costs this test nothing it checks.
soak is opt-in (half an hour at full length) but its quick minute runs here, on its own:
it sleeps between its churn steps and samples.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from at_once import run_at_once

from bench.__main__ import BENCHMARKS, OPT_IN
from bench.soak_churn import KINDS

REPO = Path(__file__).resolve().parents[3]
# Groups of about the same length (quick, three at once on 2 cores: fleet 41 s, nerve
# 14, failure 16, scale 25, propagation 28, edge 16, burst 23, churn 21, zones 23; soak
# about 65 s, a fixed minute of churn, alone); the last group takes every benchmark not
# named here (a new one too).
GROUPS = (("fleet", "nerve", "failure"), ("scale", "propagation", "edge"), ("soak",))
# Opt-in benchmarks whose --quick runs here all the same (peer needs root and a dockerd).
SMOKED_OPT_IN = ("soak",)
SMOKED = [name for name in BENCHMARKS if name not in OPT_IN or name in SMOKED_OPT_IN]


def groups() -> list[list[str]]:
    named = [[name for name in SMOKED if name in group] for group in GROUPS]
    return [*named, [name for name in SMOKED if not any(name in group for group in GROUPS)]]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_every_benchmark_runs_quick_and_writes_its_json(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "bench", "--quick", "--results-dir", str(tmp_path)]
    logs = [tmp_path / f"group-{index}.log" for index in range(len(groups()))]
    codes = run_at_once([[*command, *names] for names in groups()], logs, REPO, timeout=580)
    outputs = [log.read_text() for log in logs]
    for code, output in zip(codes, outputs, strict=True):
        assert code == 0, output[-6000:]
    output = "".join(outputs)
    for name in SMOKED:
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
    soak = json.loads((tmp_path / "soak.json").read_text())["figures"]
    assert len(soak["samples"]) >= 10, soak["samples"]
    assert sorted(k for k, n in soak["churn"]["counts"].items() if n) == sorted(KINDS)


def test_the_groups_hold_every_benchmark_once() -> None:
    names = [name for group in groups() for name in group]
    assert sorted(names) == sorted(SMOKED)
    assert all(groups()), "a group with no benchmark runs them all (bench's default)"
    assert set(SMOKED_OPT_IN) <= OPT_IN and "peer" not in SMOKED
