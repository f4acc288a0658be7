"""The burst writers' dealing of changes to writers (pure: no registry)."""

from __future__ import annotations

from bench.burst_writers import deal, undeal


def test_deal_is_round_robin_and_undeal_restores_the_order() -> None:
    items = list(range(23))
    shares = deal(items, 10)
    assert shares[0] == [0, 10, 20] and shares[3] == [3, 13] and shares[9] == [9, 19]
    assert sorted(x for share in shares for x in share) == items
    assert undeal(shares, len(items)) == items


def test_fewer_items_than_writers_leaves_writers_idle() -> None:
    shares = deal(["a", "b"], 4)
    assert shares == [["a"], ["b"], [], []]
    assert undeal(shares, 2) == ["a", "b"]
