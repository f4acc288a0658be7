"""`make demo` works end to end: traffic spreads, fails over, returns, nothing is left behind."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from testbed.process import process_gone


@pytest.mark.timeout(240)
def test_demo_runs_to_completion_and_cleans_up() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "testbed.demo"],
        cwd=Path(__file__).resolve().parents[2],  # testbed is not installed: run from the repo
        capture_output=True,
        text=True,
        timeout=200,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    for step in ("embedded etcd", "three HTTP services", "app-2 crashes", "app-2 comes back"):
        assert step in out
    # Before the crash every service answered; after it app-2 got nothing until it came back.
    before, _, rest = out.partition("app-2 crashes")
    during, _, after = rest.partition("app-2 comes back")
    assert re.search(r"app-2: +[1-9]", before)
    assert re.findall(r"app-2: +(\d+)", during.split("\n", 2)[2])  # lines printed after removal
    assert all(n == "0" for n in re.findall(r"app-2: +(\d+)", during.split("\n", 2)[2]))
    assert re.search(r"app-2: +[1-9]", after)
    assert "HAProxy reloads during the failover and the return: 0" in out
    pids = [int(p) for p in re.findall(r"\(pid (\d+)\)", out)]
    assert len(pids) == 3
    assert all(process_gone(pid) for pid in pids)
