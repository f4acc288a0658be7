"""The propagation bench's traced figure: synapse's own (event, acked) pairs matched to
the bench's changes by the event's time."""

from __future__ import annotations

import pytest

from bench.propagation import traced_spans


def test_each_change_takes_the_one_traced_event_in_its_window():
    windows = [(10.0, 10.004), (10.010, 10.013), (10.020, 10.030)]
    pairs = [
        (9.0, 9.001),  # an older change (before every window)
        (10.002, 10.0028),  # the first change: 0.8 ms
        (10.0115, 10.0121),  # the second: 0.6 ms
        (10.022, 10.023),  # the third window holds two events: not one change, left out
        (10.025, 10.026),
    ]
    assert traced_spans(windows, pairs) == pytest.approx([0.0008, 0.0006])


def test_a_change_synapse_did_not_list_is_left_out():
    assert traced_spans([(1.0, 2.0)], []) == []
