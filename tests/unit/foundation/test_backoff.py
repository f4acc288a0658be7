"""Jitter bounds: retries and re-lists after an outage must not arrive in lockstep."""

from __future__ import annotations

import random

import pytest

from smartstack.backoff import Backoff, spread


def test_spread_stays_in_its_window_and_uses_all_of_it() -> None:
    random.seed(7)
    delays = [spread(2.0) for _ in range(2000)]
    assert all(0.0 <= d <= 2.0 for d in delays)
    # Spread, not a constant: both ends of the window are reached.
    assert min(delays) < 0.1 and max(delays) > 1.9
    assert len({round(d, 3) for d in delays}) > 1000


@pytest.mark.parametrize("window", [0.0, -1.0])
def test_spread_of_no_window_is_no_delay(window: float) -> None:
    assert spread(window) == 0.0


def test_backoff_full_jitter_between_half_and_the_capped_ceiling() -> None:
    random.seed(3)
    backoff = Backoff(0.5, 4.0)
    for ceiling in (0.5, 1.0, 2.0, 4.0, 4.0, 4.0):
        delay = backoff.next()
        assert ceiling / 2 <= delay <= ceiling
    backoff.reset()
    assert 0.25 <= backoff.next() <= 0.5
