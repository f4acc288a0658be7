"""`python -m bench.faults --quick`: the reliability suite end to end, shortened.

Real ZooKeeper ensemble, etcd cluster, HAProxy, nerve, synapse and wrk, as `make faults`
uses them. Checks that every scenario ran and the report was written, that the
scenarios expected to be perfect failed no request (synapse restarts included: its
HAProxy keeps serving and is adopted without a reload), and bounds HAProxy kill -9.

The HAProxy kill -9 bound: requests in flight on the killed processes and those sent
before the new HAProxy listens fail, nothing can save them. synapse sees the death at
once (pidfd) and starts HAProxy from its files at once: what is left is HAProxy's own
start. Measured 0.7-1.9 s with a load average of 30-75 on 2 cores, where `haproxy -c` of
a minimal config alone takes 0.6-0.9 s. So the bound is HAPROXY_RECOVER_S plus twice the
time `haproxy -c` takes on this machine right now (an idle machine: ~1.1 s in all; the
old 0.5 s backoff plus a 1 s poll would not fit), and at most the requests the load sends
in that time (4 threads, one GET each per 20 ms: 200/s) fail.

The scenarios run in two `python -m bench.faults --only ...` processes at once, each with
its own registries and ports: each scenario mostly waits (registries starting, outages
timed), and one after the other they were the suite's slowest test (~97 s on CI). The
halves take about as long (51-53 s quick, on 2 cores; the test 73 s with checks-all-timeout).
The first runs the light ZooKeeper scenarios (a leader kill, nerve restarted or
reconfigured, every HAProxy check timing out) and then every etcd one; the
second the other ZooKeeper ones, among them the two that restart the whole ensemble
(three JVMs starting) and hostile-records (synapse parsing 1,000 records).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from at_once import run_at_once

from bench.faults import OUT_OF_HAPROXY_MAX_S
from bench.faults_scenarios import SCENARIOS

REPO = Path(__file__).resolve().parents[3]  # tests/system/bench/ -> the repository
HAPROXY_RECOVER_S = 1.0
PANIC = "every server's HAProxy check timing out (slow /ready)"
LOAD_PER_S = 200  # bench.faults' load: 4 threads, one GET each every 20 ms
PERFECT = (
    "synapse SIGTERM + restart",
    "synapse kill -9 + restart",
    "ZooKeeper leader kill -9",
    "etcd leader kill -9",
    "1,000 hostile registry records",
    "malformed configs on SIGHUP",
    "synapse restarted onto a config with a typo",
    "SIGHUP reloads with keep-alive and 2 s requests in flight",
    "all etcd members down 10 s",
    "synapse restarted while every ZooKeeper member is down",
    "nerve kill -9 + restart (zookeeper)",
    "nerve SIGHUP changing the weight (zookeeper)",
    "nerve kill -9 + restart (etcd)",
    "nerve SIGHUP changing the weight (etcd)",
    PANIC,
)
FIRST_HALF = (
    "zk-leader-kill",
    "zk-nerve-kill9-restart",
    "zk-nerve-sighup-record",
    "checks-all-timeout",
)


def halves() -> list[list[str]]:
    """Scenario names of the two processes: FIRST_HALF and every etcd one | the rest."""
    first = [n for n, (kind, _) in SCENARIOS.items() if n in FIRST_HALF or kind == "etcd"]
    return [first, [n for n in SCENARIOS if n not in first]]


def haproxy_check_seconds(tmp_path: Path) -> float:
    """How long `haproxy -c` of a minimal config takes here now (the slowest of three)."""
    config = tmp_path / "minimal.cfg"
    config.write_text(
        "global\n    maxconn 4096\ndefaults\n    mode http\n    timeout connect 1s\n"
        "    timeout client 1s\n    timeout server 1s\nfrontend f\n    bind 127.0.0.1:9\n"
    )  # a listener (-c binds nothing): without one `haproxy -c` exits 2
    times = []
    for _ in range(3):
        began = time.perf_counter()
        subprocess.run(["haproxy", "-c", "-q", "-f", str(config)], check=True, timeout=30)
        times.append(time.perf_counter() - began)
    return max(times)


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_fault_suite_runs_quick_and_writes_its_report(tmp_path: Path) -> None:
    dirs = [tmp_path / f"half-{index}" for index in range(2)]
    commands = []
    for names, out_dir in zip(halves(), dirs, strict=True):
        out_dir.mkdir()
        commands.append([sys.executable, "-m", "bench.faults", "--quick", "--results-dir",
                         str(out_dir), "--report", str(out_dir / "RELIABILITY.md"), "--only",
                         *names])  # fmt: skip
    run_at_once(commands, [d / "output.log" for d in dirs], REPO, timeout=400)
    output = "".join((d / "output.log").read_text()[-3000:] for d in dirs)
    halves_data = [json.loads((d / "faults.json").read_text()) for d in dirs]
    for data in halves_data:
        assert data["quick"] is True and not data["failures"], output
    scenarios = {s["scenario"]: s for data in halves_data for s in data["figures"]["scenarios"]}
    assert len(scenarios) == len(SCENARIOS), output
    for figures in scenarios.values():
        assert figures["total"] > 0, figures  # load flowed through HAProxy in every window
        assert figures["registrations"] == "2/2", figures  # nothing extra in HAProxy
    for name in PERFECT:
        assert scenarios[name]["failed"] == 0, scenarios[name]
    for figures in scenarios.values():  # nerve restarted or reconfigured: a healthy one stays
        out = figures["out_of_haproxy_s"]
        assert out is None or out <= OUT_OF_HAPROXY_MAX_S, figures
    restarts = ("synapse SIGTERM + restart", "synapse kill -9 + restart")
    for name in (*restarts, "synapse restarted onto a config with a typo"):
        assert scenarios[name]["reloads"] == 0, scenarios[name]  # adopted as it ran
    assert scenarios[PANIC]["extra"]["synapse panics"][0] >= 1, scenarios[PANIC]  # it held them
    crash = scenarios["HAProxy kill -9"]
    bound = HAPROXY_RECOVER_S + 2 * haproxy_check_seconds(tmp_path)
    assert crash["recover_s"] <= bound, (bound, crash)
    assert crash["failed"] <= LOAD_PER_S * bound, (bound, crash)
    texts = [(d / "RELIABILITY.md").read_text() for d in dirs]
    assert all("Mode of this run: **QUICK" in text for text in texts)
    text = "".join(texts)
    assert all(f"| {name} |" in text for name in scenarios), text


def test_the_halves_hold_every_scenario_once() -> None:
    names = [name for half in halves() for name in half]
    assert sorted(names) == sorted(SCENARIOS)
    assert all(halves()), "a half with no scenario runs them all (--only's default)"
