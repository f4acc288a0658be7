"""The reliability suite's report: Figures -> Result -> JSON -> RELIABILITY.md, and the
paced client's counting (each attempt once, failures timed)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from bench.faults import Figures, summary, to_result, write_report
from bench.paced import PacedClient
from bench.report import Target, write_json
from testbed.process import free_port


def figures() -> list[Figures]:
    return [
        Figures("etcd leader kill -9", 0, 812, recover_s=0.48, recover_what="new leader",
                registrations="2/2", reloads=0),
        Figures("HAProxy kill -9", 495, 801, {"refused": 495}, failing_s=2.56, recover_s=2.65,
                recover_what="answers", registrations="2/2", reloads=1, expect_zero=False),
    ]  # fmt: skip


def test_targets_only_where_zero_is_already_expected() -> None:
    result = to_result(figures(), quick=True, failures=[])
    rows = {s.title: {r.label: r for r in s.rows} for s in result.sections}
    assert rows["etcd leader kill -9"]["failed requests"].target == Target("==", 0)
    assert rows["HAProxy kill -9"]["failed requests"].target is None
    assert rows["HAProxy kill -9"]["requests failing for"].value == 2.56
    assert result.missed() == []


def test_report_says_its_mode_and_lists_every_scenario(tmp_path: Path) -> None:
    path = write_json(to_result(figures(), quick=True, failures=[]), True, tmp_path)
    report = tmp_path / "RELIABILITY.md"
    write_report(report, json.loads(path.read_text()), figures())
    text = report.read_text()
    assert "Mode of this run: **QUICK" in text
    assert (
        "| HAProxy kill -9 | 495 / 801 (not yet 0) | 2.56 s | 2.65 s (answers) | 2/2 | 1 |" in text
    )
    assert "| etcd leader kill -9 | 0 / 812 | 0 s |" in summary(figures())
    assert "**HAProxy kill -9**" in text  # the detailed sections, from bench.markdown


def test_paced_client_counts_refused_attempts_once() -> None:
    client = PacedClient(free_port(), threads=2, interval_s=0.05, max_duration_s=0.5).start()
    time.sleep(0.6)  # past its own bound: the threads have stopped by themselves
    result = client.finish()
    assert 2 <= result.attempts <= 2 * (0.6 / 0.05 + 2)  # paced, not a tight loop
    assert result.failed == result.attempts == result.errors["refused"]
    assert 0 < result.outage_s < 0.7
