"""The fleet bench's outage burst: rates over uneven sample steps, not raw steps."""

from __future__ import annotations

import pytest

from bench.fleet_registry import burst


def steady_series(until: float, rate: float, start: float = 0.0, count: float = 0.0):
    """(t, cumulative count) every 0.1 s at `rate` per second."""
    points, t = [], start
    while t <= until + 1e-9:
        points.append((round(t, 3), count + rate * (t - start)))
        t += 0.1
    return points


def test_a_late_sample_is_a_rate_over_its_step_not_a_peak_of_its_own() -> None:
    # 10/s steady; one sample arrives 8 s late and holds 1,000 requests above the steady rate.
    before = steady_series(2.0, 10.0)
    late_t, late_count = 10.0, before[-1][1] + 10.0 * 8.0 + 1000.0
    after = steady_series(15.0, 10.0, start=late_t + 0.1, count=late_count + 1.0)
    out = burst([*before, (late_t, late_count), *after])
    assert out["steady_per_s"] == pytest.approx(10.0)
    assert out["excess"] == pytest.approx(1000.0, rel=0.01)
    assert out["longest_step_s"] == pytest.approx(8.0)
    assert out["peak_per_s"] == pytest.approx((80.0 + 1000.0) / 8.0, rel=0.01)
    assert out["t10_s"] == out["t50_s"] == out["t90_s"] == late_t


def test_a_spread_burst_reports_when_its_shares_arrived() -> None:
    points, count = [], 0.0
    for step in range(101):  # 0..10 s; 100 extra requests per step from 2 s to 4 s
        t = step / 10
        count += 1.0 + (100.0 if 2.0 < t <= 4.0 else 0.0)
        points.append((t, count))
    out = burst(points)
    assert out["excess"] == pytest.approx(2000.0)
    assert out["t10_s"] == pytest.approx(2.2)
    assert out["t50_s"] == pytest.approx(3.0)
    assert out["t90_s"] == pytest.approx(3.8)
    assert out["longest_step_s"] == pytest.approx(0.1)


def test_no_steps_no_burst() -> None:
    assert burst([(0.0, 5.0)])["excess"] == 0.0
