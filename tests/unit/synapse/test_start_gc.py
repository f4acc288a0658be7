"""synapse.start_gc: few collections during a start, the process's thresholds after it."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from synapse import start_gc


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    before = gc.get_threshold()
    monkeypatch.setattr(start_gc, "_saved", None)
    monkeypatch.setattr(start_gc, "_settled", False)
    monkeypatch.setattr(gc, "freeze", lambda: None)  # the test process's heap stays as is
    gc.set_threshold(700, 10, 10)
    yield
    gc.set_threshold(*before)


def test_relaxed_until_settled_then_the_thresholds_come_back(fresh: None) -> None:
    start_gc.relax()
    assert gc.get_threshold()[0] == start_gc.START_GEN0
    start_gc.relax()  # a second call does not save the relaxed thresholds as the process's
    start_gc.settle()
    assert gc.get_threshold() == (700, 10, 10)
    gc.set_threshold(500, 5, 5)  # settled once: later calls change nothing
    start_gc.settle()
    start_gc.relax()
    assert gc.get_threshold() == (500, 5, 5)
