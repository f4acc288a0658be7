"""bench.zk_stats: ZooKeeper's own account of a sampling window, parsed from its text."""

from __future__ import annotations

from bench.zk_stats import ServerWindow, gc_pauses, parse_mntr

GC_LOG = """\
[0.012s][info][gc] Using Serial
[0.587s][info][gc] GC(0) Pause Young (Allocation Failure) 8M->4M(30M) 7.664ms
[1.376s][info][gc] GC(1) Pause Young (Allocation Failure) 12M->5M(30M) 8.386ms
[9.100s][info][gc] GC(2) Pause Full (System.gc()) 40M->20M(245M) 31.002ms
"""


def test_gc_pauses_are_the_pause_lines_times():
    assert gc_pauses(GC_LOG) == [7.664, 8.386, 31.002]
    assert gc_pauses("[0.012s][info][gc] Using Serial\n") == []


def test_mntr_numeric_lines_only():
    text = "zk_version\t3.8.0-1, built on 2022\nzk_p99_updatelatency\t12\nzk_avg_fsynctime\t0.68\n"
    assert parse_mntr(text) == {"zk_p99_updatelatency": 12.0, "zk_avg_fsynctime": 0.68}


def test_summary_names_every_figure_and_marks_missing_ones():
    stats = {"zk_p50_updatelatency": 1.0, "zk_p99_updatelatency": 12.0, "gc_pauses": 2,
             "gc_pause_max_ms": 8.386}  # fmt: skip
    line = ServerWindow.summary(stats)
    assert line.startswith("update p50/p99/max 1/12/?,")
    assert line.endswith("GC pauses 2 (max 8.386)")
