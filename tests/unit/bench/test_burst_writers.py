"""The burst writers' dealing of changes to writers (pure: no registry)."""

from __future__ import annotations

import pytest

from bench.burst_writers import ZkBurstWriter, _Fan, deal, undeal


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


def test_the_fan_starts_every_thread_before_the_clock() -> None:
    fan = _Fan(10, "test-fan")
    try:
        assert len(fan._pool._threads) == 10  # type: ignore[attr-defined]
        assert fan.run(lambda i: i * 2) == [2 * i for i in range(10)]
    finally:
        fan.close()


def test_a_failed_start_closes_the_sessions_it_made(monkeypatch) -> None:
    made: list[str] = []

    class Session:
        def stop(self) -> None:
            made.append("stop")

        def close(self) -> None:
            made.append("close")

    def client(hosts: str) -> Session:
        if made.count("made") == 3:
            raise RuntimeError("no fourth session")
        made.append("made")
        return Session()

    monkeypatch.setattr(ZkBurstWriter, "_client", staticmethod(client))
    with pytest.raises(RuntimeError, match="fourth"):
        ZkBurstWriter("127.0.0.1:1", lambda path, record: path)
    assert made == ["made"] * 3 + ["stop", "close"] * 3
