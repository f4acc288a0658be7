"""smartstack.strings: one copy of equal strings, and no growth under churn (issue 15)."""

from __future__ import annotations

import sys

from smartstack import strings


def _fresh(i: int) -> str:
    return "".join(("srv", str(i), "_10.0.0.1:", str(8000 + i % 1000)))  # a new object


def test_equal_strings_share_one_object() -> None:
    first = strings.share(_fresh(7))
    again = _fresh(7)
    assert again is not first
    assert strings.share(again) is first


def test_strings_still_held_elsewhere_survive_a_sweep() -> None:
    held = [strings.share(_fresh(i)) for i in range(3000)]
    strings.sweep()
    assert all(strings.share(_fresh(i)) is held[i] for i in range(3000))


def test_churn_of_distinct_strings_does_not_grow_the_table() -> None:
    strings.sweep()
    before = strings.size()  # what other tests of this process still hold
    live = [strings.share(_fresh(i)) for i in range(1000)]  # what a fleet keeps
    bound = max(strings.FLOOR, 2 * (before + 1000)) + 1
    footprints = []
    for rnd in range(10):  # 10 x 5,000 distinct strings, each dropped by its user
        for i in range(5_000):
            strings.share(_fresh(1_000_000 * (rnd + 1) + i))
        assert strings.size() <= bound, f"round {rnd}: {strings.size()} entries"
        footprints.append(strings.footprint())
    # sys.intern on Python 3.12 kept all 50,000 (~5 MB, immortal); here ~2x the live at most:
    # the bound's strings (<= 80 bytes each) and a dict with room for twice as many
    most = sys.getsizeof(dict.fromkeys(range(2 * bound))) + 80 * bound
    assert max(footprints) <= most, (footprints, most)
    assert all(strings.share(_fresh(i)) is live[i] for i in range(1000))
