"""The soak's figures: growth slopes, the warm-up window, threads/fds rise, CPU, verdicts."""

from __future__ import annotations

from typing import Any

import pytest

from bench.report import Result, format_table
from bench.soak import DAEMONS, cpu_percent, report, rise, slope_per_hour, tail

MINUTE = 60.0


def test_the_slope_is_least_squares_in_units_per_hour() -> None:
    assert slope_per_hour([(0, 10), (1800, 11), (3600, 12)]) == pytest.approx(2.0)
    # Noisy points: the fit, not the line through the first and last (1,200/h).
    assert slope_per_hour([(0, 0), (1, 1), (2, 0), (3, 1)]) == pytest.approx(720.0)
    assert slope_per_hour([(0, 5), (3600, 3)]) == pytest.approx(-2.0)
    assert slope_per_hour([(0, 5)]) is None
    assert slope_per_hour([(10, 5), (10, 7)]) is None


def test_the_warm_up_is_the_first_quarter_and_the_last_half_is_of_what_is_left() -> None:
    samples = [{"t": k * MINUTE} for k in range(13)]  # 0 .. 12 min
    measured = tail(samples, 0.25)
    assert [s["t"] for s in measured] == [k * MINUTE for k in range(3, 13)]
    # from 3 + (12 - 3) / 2 = 7.5 min on
    assert [s["t"] for s in tail(measured, 0.5)] == [k * MINUTE for k in range(8, 13)]


def test_a_window_keeps_at_least_two_samples() -> None:
    samples = [{"t": 0.0}, {"t": 50.0}, {"t": 60.0}]
    assert [s["t"] for s in tail(samples, 0.9)] == [50.0, 60.0]
    assert tail([], 0.25) == []


def test_rise_compares_the_medians_of_the_later_and_the_earlier_half() -> None:
    assert rise([7, 7, 7, 7]) == 0
    assert rise([5, 5, 6, 6]) == 1
    assert rise([24, 21, 23, 23, 24, 21]) == 0  # comes and goes: nets out
    assert rise([1, 2, 3, 4, 100]) == 50.5  # the middle one is in neither half
    assert rise([9, 7]) == -2
    assert rise([3]) is None


def _sample(t: float, pid: int, cpu_s: float) -> dict[str, Any]:
    return {"t": t, "daemons": {"synapse": {"pid": pid, "cpu_s": cpu_s}}}


def test_cpu_is_a_share_of_one_core_and_a_new_process_counts_from_its_start() -> None:
    assert cpu_percent([_sample(0, 1, 0), _sample(60, 1, 6)], "synapse") == pytest.approx(10)
    samples = [_sample(0, 1, 5), _sample(60, 1, 8), _sample(120, 2, 3)]
    assert cpu_percent(samples, "synapse") == pytest.approx(5)  # 3 + 3 s over 120 s
    assert cpu_percent([_sample(0, 1, 5)], "synapse") is None
    assert cpu_percent([_sample(0, 1, 5), _sample(60, 1, 6)], "haproxy_worker") is None


def _soak(minutes: int, rss_mb: dict[str, Any], threads: Any = 7) -> list[dict[str, Any]]:
    """Samples a minute apart; rss_mb and threads: a number or a function of the minute."""
    samples = []
    for k in range(minutes + 1):
        daemons = {}
        for i, daemon in enumerate(DAEMONS):
            rss = rss_mb.get(daemon, 30)
            daemons[daemon] = {
                "pid": 100 + i,
                "rss_kib": (rss(k) if callable(rss) else rss) * 1024,
                "threads": threads(k) if callable(threads) and daemon == "synapse" else 7,
                "fds": 20 + k % 3,  # comes and goes with the churn
                "cpu_s": k * 0.6,
                "series": 90,
            }
        load = {"requests": 1000, "failed": k % 2, "errors": {"read": k % 2, "status": 0}}
        samples.append({"t": k * MINUTE, "daemons": daemons, "load": load if k else None})
    return samples


def _rows(result: Result, title: str) -> dict[str, Any]:
    (section,) = [s for s in result.sections if s.title == title]
    return {row.label: row for row in section.rows}


def test_a_daemon_still_growing_misses_and_one_that_settled_after_its_warm_up_does_not() -> None:
    # synapse: +1 MB per 10 minutes all along (6 MB/h); nerve host0: 10 MB in the first
    # two minutes (warm-up, left out), flat after.
    growing = {"synapse": lambda k: 40 + k / 10, "host0": lambda k: 30 + 5 * min(k, 2)}
    result = Result("soak")
    report(result, _soak(12, growing), {"counts": {"haproxy_worker_kill": 2}, "errors": 0}, False)

    synapse = _rows(result, "synapse")
    assert synapse["RSS after warm-up"].value == pytest.approx(40.3)  # at 3 min
    assert synapse["RSS at the end"].value == pytest.approx(41.2)
    assert synapse["RSS growth, measured span"].value == pytest.approx(6.0)
    assert synapse["RSS growth, its last half"].value == pytest.approx(6.0)
    nerve = _rows(result, "nerve host0")
    assert nerve["RSS after warm-up"].value == pytest.approx(40)
    assert nerve["RSS growth, its last half"].value == pytest.approx(0)
    assert nerve["CPU over the measured span"].value == pytest.approx(1.0)  # 0.6 s a minute
    assert nerve["fds: rise (median, later half - earlier)"].value == 0
    assert result.missed() == ["synapse: RSS growth, its last half"]
    assert "MISSED" in format_table(result)

    totals = _rows(result, "churn and load")
    assert totals["HAProxy worker SIGKILL"].value == 2
    assert totals["ZooKeeper restart"].value == 0
    assert totals["client requests"].value == 12_000
    assert totals["client requests failed"].value == 6
    assert "read 6" in totals["client requests failed"].note
    assert totals["client requests failed"].target is None


def test_threads_that_keep_rising_miss() -> None:
    result = Result("soak")
    report(result, _soak(12, {}, threads=lambda k: 7 + k), {"counts": {}, "errors": 0}, False)
    assert result.missed() == ["synapse: threads: rise (median, later half - earlier)"]


def test_quick_claims_nothing() -> None:
    growing = {"synapse": lambda k: 40 + k}
    result = Result("soak")
    report(result, _soak(12, growing, threads=lambda k: 7 + k), {"counts": {}, "errors": 0}, True)
    assert result.missed() == []
    assert all(row.target is None for section in result.sections for row in section.rows)
    assert any(note.startswith("quick:") for note in result.notes)
