"""smartstack.zk_handoff: a tree event waits in kazoo's thread for its read's answer, then
crosses to the loop with it, in order with the watch's other events (no ZooKeeper: kazoo's
own async results, answered by hand as kazoo's thread would)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from kazoo.exceptions import ConnectionLoss

from smartstack import zk_handoff
from smartstack.kazoo_inline import InlineHandler
from smartstack.zk_handoff import Handoff, answered


class _Loop:
    """What Handoff asks of the event loop: every crossing, recorded."""

    def __init__(self, closed: bool = False) -> None:
        self.crossings: list[list[Any]] = []
        self.closed = closed
        self._lock = threading.Lock()

    def call_soon_threadsafe(self, fn: Any, batch: list[Any]) -> None:
        if self.closed:
            raise RuntimeError("Event loop is closed")
        with self._lock:
            self.crossings.append(list(batch))

    def seen(self) -> list[Any]:
        return [item for batch in self.crossings for item in batch]


def _handler() -> InlineHandler:
    handler = InlineHandler()
    handler._running = True  # (no worker threads: inline callbacks only)
    return handler


def _handoff(loop: _Loop) -> Handoff[str]:
    return Handoff(loop, lambda batch: None)  # type: ignore[arg-type]


def test_an_event_with_a_read_crosses_once_with_its_answer() -> None:
    loop, handler = _Loop(), _handler()
    handoff = _handoff(loop)
    read = handler.async_result()
    handoff.push("created c", read)
    assert loop.crossings == [] and handoff.held == 1  # waits for its read
    read.set((b"{}", None))  # kazoo's thread reads the answer
    assert loop.crossings == [["created c"]] and handoff.held == 0


def test_an_event_without_a_read_does_not_overtake_one_waiting_for_its_read() -> None:
    loop, handler = _Loop(), _handler()
    handoff = _handoff(loop)
    read = handler.async_result()
    handoff.push("created c", read)
    handoff.push("deleted c", None)  # no read: ready, but behind c's creation
    handoff.push("created d (no read: MAX_WAITING)", None)
    assert loop.crossings == []
    read.set((b"{}", None))
    assert loop.crossings == [["created c", "deleted c", "created d (no read: MAX_WAITING)"]]


def test_reads_answered_out_of_order_still_cross_in_event_order() -> None:
    loop, handler = _Loop(), _handler()
    handoff = _handoff(loop)
    first, second, third = (handler.async_result() for _ in range(3))
    handoff.push("a", first)
    handoff.push("b", second)
    handoff.push("c", third)
    second.set(("b", None))
    assert loop.crossings == []
    first.set(("a", None))
    assert loop.crossings == [["a", "b"]]  # the ready head, together
    third.set(("c", None))
    assert loop.crossings == [["a", "b"], ["c"]]


def test_events_without_reads_cross_at_once() -> None:
    loop = _Loop()
    handoff = _handoff(loop)
    handoff.push("deleted a", None)
    handoff.push("relist", None)
    assert loop.crossings == [["deleted a"], ["relist"]] and handoff.held == 0


def test_a_failed_read_releases_the_queue_too() -> None:
    """A connection loss or expiry: kazoo's _notify_pending sets every pending request's
    exception in its thread, which runs the inline callbacks."""
    loop, handler = _Loop(), _handler()
    handoff = _handoff(loop)
    reads = [handler.async_result() for _ in range(3)]
    for i, read in enumerate(reads):
        handoff.push(f"created {i}", read)
    handoff.push("deleted 0", None)
    for read in reads:
        read.set_exception(ConnectionLoss())
    assert loop.seen() == ["created 0", "created 1", "created 2", "deleted 0"]
    assert handoff.held == 0


def test_an_answered_read_crosses_at_once() -> None:
    loop, handler = _Loop(), _handler()
    handoff = _handoff(loop)
    read = handler.async_result()
    read.set_exception(ConnectionLoss())  # (kazoo's _call failed it at once)
    handoff.push("created c", read)
    assert loop.crossings == [["created c"]]


def test_a_closed_loop_drops_the_events_without_raising() -> None:
    handler = _handler()
    handoff = _handoff(_Loop(closed=True))
    read = handler.async_result()
    handoff.push("created c", read)
    read.set(("c", None))  # (raising here would reach kazoo's callback runner)
    handoff.push("deleted c", None)
    assert handoff.held == 0


def test_a_read_never_answered_is_let_go_at_the_next_event(monkeypatch) -> None:
    loop, handler = _Loop(), _handler()
    handoff = _handoff(loop)
    lost, later = handler.async_result(), handler.async_result()
    handoff.push("created a (its request lost)", lost)
    handoff.push("created b", later)
    later.set(("b", None))
    assert loop.crossings == []
    monkeypatch.setattr(zk_handoff, "HOLD_MAX_S", -1.0)  # (both are too old now)
    handoff.push("deleted c", None)
    assert loop.crossings == [["created a (its request lost)", "created b", "deleted c"]]
    lost.set(("a", None))  # a late answer crosses nothing twice
    assert len(loop.seen()) == 3


def test_a_not_too_old_head_keeps_holding(monkeypatch) -> None:
    loop, handler = _Loop(), _handler()
    handoff = _handoff(loop)
    handoff.push("created a", handler.async_result())
    monkeypatch.setattr(zk_handoff, "HOLD_MAX_S", 60.0)
    handoff.push("deleted a", None)
    assert loop.crossings == [] and handoff.held == 2


def test_answers_from_another_thread_keep_the_order() -> None:
    """kazoo's thread pushes while another thread answers (a stop's answers may come from
    the closing thread): every event crosses once, in push order."""
    loop, handler = _Loop(), _handler()
    handoff = _handoff(loop)
    reads = [handler.async_result() for _ in range(2000)]
    answerer = threading.Thread(target=lambda: [r.set((i, None)) for i, r in enumerate(reads)])
    answerer.start()
    for i, read in enumerate(reads):
        handoff.push(f"created {i}", read if i % 3 else None)
    answerer.join()
    assert loop.seen() == [f"created {i}" for i in range(2000)]
    assert handoff.held == 0


def test_answered_reports_all_outcomes_or_none_while_one_waits() -> None:
    handler = _handler()
    done, failed, waiting = (handler.async_result() for _ in range(3))
    done.set(("data", "stat"))
    failed.set_exception(ConnectionLoss())
    early = ValueError("raised when sent")
    outcomes = answered([done, failed, early])
    assert outcomes is not None
    assert outcomes[0] == ("data", "stat") and isinstance(outcomes[1], ConnectionLoss)
    assert outcomes[2] is early
    assert answered([done, waiting]) is None
    assert answered([]) == []


@pytest.mark.parametrize("answer_first", [True, False])
def test_wait_all_takes_answered_reads_without_waiting(answer_first: bool) -> None:
    import asyncio
    from types import SimpleNamespace

    from smartstack.zookeeper import ZooKeeperConnection

    loop = asyncio.new_event_loop()
    try:
        handler = _handler()
        read = handler.async_result()
        conn = SimpleNamespace(loop=loop)
        if answer_first:
            read.set(("data", "stat"))
            coro = ZooKeeperConnection.wait_all(conn, [read])  # type: ignore[arg-type]
            with pytest.raises(StopIteration) as stop:  # done without one suspension
                coro.send(None)
            assert stop.value.value == [("data", "stat")]
        else:
            loop.call_soon(read.set, ("late", "stat"))
            got = loop.run_until_complete(ZooKeeperConnection.wait_all(conn, [read]))  # type: ignore[arg-type]
            assert got == [("late", "stat")]
    finally:
        loop.close()
