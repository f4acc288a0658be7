"""The read after an apply's commands (``RunningReader._settle``) and the after-start
sweep's per-part applies, with a scripted runtime client (no socket, no process)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from synapse.haproxy import reader as reader_mod
from synapse.haproxy.outside import SweepHooks
from synapse.haproxy.reader import SETTLE_ROUNDS, RunningReader
from synapse.haproxy.reload_window import ReloadWindow
from synapse.haproxy.sockets import SocketUnavailable
from synapse.haproxy.view import (
    READ_STEP,
    START_PART,
    START_STEP,
    START_WAIT,
    SWEEP_PART,
    Read,
)

from test_view import ScriptedClient, srv, view_of  # isort: skip


class HeldClient(ScriptedClient):
    """Also stands for the sweep's own RuntimeClient (``held`` connects nothing)."""

    @contextlib.asynccontextmanager
    async def held(self):
        yield


async def _reader(names: str = "abcdef") -> tuple[ScriptedClient, RunningReader, list[int]]:
    """A reader whose view read every backend, with the controller's lock and an apply
    that counts its calls (as ``start_sweeping`` sets them, without the sweep)."""
    client = ScriptedClient()
    client.state = {n: {"x": srv(n, "x", 1)} for n in names}
    reader = RunningReader([client], None, lambda: 0.0)  # type: ignore[list-item]
    reader.version = (2, 8, 0)
    assert reader.view is not None
    await reader.view.read_all()
    applies: list[int] = []

    async def apply() -> None:
        applies.append(1)

    reader.hooks = SweepHooks(asyncio.Lock(), lambda: True, apply)
    view = reader.view  # (the settle read's own connection: the scripted client)
    reader._read_apart = lambda backends: view.read_part(client, backends)  # type: ignore[method-assign]
    return client, reader, applies


def _held_read(reader: RunningReader, release: asyncio.Event, result: Any) -> None:
    """The settle read waits for ``release``, then returns (or raises) ``result()``."""

    async def read_apart(backends):
        await release.wait()
        return await result(backends)

    reader._read_apart = read_apart  # type: ignore[method-assign]


async def test_a_failed_settle_read_leaves_the_view_trusted_and_the_backends_stale():
    """The next apply reads what the read did not bring; the view read since a reload
    (or by the apply's own connection) is not thrown away."""
    client, reader, applies = await _reader()
    view = reader.view
    assert view is not None
    release = asyncio.Event()

    async def fail(backends):
        raise SocketUnavailable("the old worker closed the connection")

    _held_read(reader, release, fail)
    reader.settle_later({"a"})
    await asyncio.sleep(0)
    async with reader.hooks.lock:  # type: ignore[union-attr]  # synapse reloads meanwhile
        client.pid = "200"
        await view.read_names()
    view.mark_stale({"b"})  # (commands after the reload)
    release.set()
    await reader._settler  # type: ignore[misc]
    assert view.valid and view.pid == "200", "the view read after the reload is kept"
    assert view.stale == {"b"} and not applies
    # Without a reload: the view stays trusted, the covered backends stale.
    await reader.read(set(), None)  # (an apply read it all)
    reader.settle_later({"c"})
    await reader._settler  # type: ignore[misc]
    assert view.valid and view.stale == {"c"} and reader._settling is None
    await reader.read(reader.stale(), set())  # the next apply reads it
    assert client.calls[-1] == ["c"] and not view.stale


async def test_a_settle_read_from_before_a_whole_read_neither_invalidates_nor_applies():
    client, reader, applies = await _reader()
    view = reader.view
    assert view is not None
    release = asyncio.Event()
    old = Read("100", view.counter, {"a": {"x": srv("a", "x", 1)}})

    async def from_the_old_process(backends):
        return old

    _held_read(reader, release, from_the_old_process)
    reader.settle_later({"a"})
    await asyncio.sleep(0)
    async with reader.hooks.lock:  # type: ignore[union-attr]  # an apply: another process answers
        client.pid = "200"
        await view.read({"b"})  # ...so it read the whole view (and planned on it)
    assert view.pid == "200" and view.valid
    release.set()
    await reader._settler  # type: ignore[misc]
    assert view.valid and view.pid == "200" and not applies


async def test_a_settle_read_finding_another_process_has_the_view_read_and_applied():
    client, reader, applies = await _reader()
    view = reader.view
    assert view is not None
    client.pid = "200"  # restarted behind synapse's back
    reader.settle_later({"a"})
    await reader._settler  # type: ignore[misc]
    assert not view.valid and applies == [1]


async def test_backends_touched_during_the_last_settle_round_are_read_by_a_later_one(
    monkeypatch,
):
    monkeypatch.setattr(reader_mod, "SETTLE_PAUSE", 0.0)
    client, reader, _ = await _reader()
    view = reader.view
    assert view is not None
    touch = iter("bcdef")
    read: list[list[str]] = []

    async def read_apart(backends):
        part = await view.read_part(client, backends)
        read.append(sorted(backends))
        reader.settle_later({n for n in [next(touch, None)] if n})  # commands meanwhile
        return part

    reader._read_apart = read_apart  # type: ignore[method-assign]
    reader.settle_later({"a"})
    await reader._settler  # type: ignore[misc]
    assert len(read) > SETTLE_ROUNDS and read == [[n] for n in "abcdef"]
    assert not view.stale and reader._settler.done()  # type: ignore[union-attr]


async def test_an_apply_waiting_for_a_settle_read_stopped_meanwhile_reads_itself():
    client, reader, _ = await _reader()
    view = reader.view
    assert view is not None
    release = asyncio.Event()
    _held_read(reader, release, lambda backends: view.read_part(client, backends))
    reader.settle_later({"a"})
    await asyncio.sleep(0)
    apply = asyncio.create_task(reader.read(reader.stale(), None))  # (e.g. an evacuation)
    await asyncio.sleep(0)
    await reader.stop_sweeping()  # (controller stop)
    running = await apply
    assert running.backends is not None and client.calls[-1] == ["a"] and not view.stale
    # An apply that is itself cancelled still ends so.
    reader.hooks.lock = asyncio.Lock()
    reader.settle_later({"b"})
    await asyncio.sleep(0)
    apply = asyncio.create_task(reader.read(reader.stale(), None))
    await asyncio.sleep(0)
    apply.cancel()
    with pytest.raises(asyncio.CancelledError):
        await apply
    release.set()
    await reader.stop_sweeping()


async def test_a_settle_read_failing_unexpectedly_leaves_nothing_for_applies_to_wait_for():
    client, reader, _ = await _reader()
    view = reader.view
    assert view is not None

    async def bug(backends):
        raise RuntimeError("a bug")

    reader._read_apart = bug  # type: ignore[method-assign]
    reader.settle_later({"a"})
    with pytest.raises(RuntimeError):
        await reader._settler  # type: ignore[misc]
    assert reader._settling is None
    await reader.read(reader.stale(), set())  # the apply reads it itself
    assert client.calls[-1] == ["a"] and not view.stale


async def test_a_change_s_turn_counts_the_changes_waiting_for_the_lock():
    _, reader, _ = await _reader()
    lock = asyncio.Lock()
    await lock.acquire()
    entered = asyncio.Event()
    window = ReloadWindow(lock, lambda error: None)

    async def change() -> None:
        async with window.turn(reader.change_waits):
            entered.set()

    waiting = asyncio.create_task(change())
    for _ in range(3):  # (its wait for the lock is queued first: a task of its own)
        await asyncio.sleep(0)
    other = asyncio.create_task(lock.acquire())  # not a change (the state dumper's idle)
    await asyncio.sleep(0)
    assert reader.changes_waiting == 1
    lock.release()
    await entered.wait()
    assert reader.changes_waiting == 0
    await waiting
    await other
    lock.release()
    cancelled = asyncio.create_task(change())
    async with lock:
        await asyncio.sleep(0)
        cancelled.cancel()  # a change cancelled while it waits is not counted any more
        await asyncio.sleep(0)
    assert reader.changes_waiting == 0 and cancelled.cancelled() and not lock.locked()


async def _swept_reader(monkeypatch, names: list[str]):
    """A reader over a HeldClient serving ``names`` (one server each), and its view, read."""
    client = HeldClient()
    client.state = {name: {"x": srv(name, "x", 1)} for name in names}
    monkeypatch.setattr("synapse.haproxy.view.RuntimeClient", lambda *a, **k: client)
    monkeypatch.setattr("synapse.haproxy.view.SWEEP_PACE", 0.0)
    reader = RunningReader([client], None, lambda: 0.0)  # type: ignore[list-item]
    reader.version = (2, 8, 0)
    view = reader.view
    assert view is not None
    await view.read_all()
    return reader, view


async def _after_start_sweep(monkeypatch, waiter: str) -> list[set[str]]:
    """Right after a start, the sweep's first part is read while an apply holds the lock
    and ``waiter`` (a change, or another task) queues behind the sweep's merge: what was
    unread at each of the sweep's applies."""
    names = [f"b{i:02}" for i in range(START_PART + 5)]
    reader, view = await _swept_reader(monkeypatch, names)
    reader.note_view_changes()
    lock, applied_at = asyncio.Lock(), []

    async def apply() -> None:
        applied_at.append(set(view.unread))

    async def change() -> None:
        async with ReloadWindow(lock, lambda error: None).turn(reader.change_waits):
            pass

    async with lock:  # the starting apply
        await reader.read(reloaded=True)  # every backend unread: the sweep runs at once
        reader.start_sweeping(lock, lambda: True, apply)
        for _ in range(20):  # (the sweep reads its first part and waits for the lock)
            await asyncio.sleep(0)
        queued = asyncio.create_task(change() if waiter == "change" else lock.acquire())
        await asyncio.sleep(0)
    await queued
    if waiter != "change":
        lock.release()  # (the state dumper gives it back at once)
    for _ in range(50):
        await asyncio.sleep(0)
    await reader.stop_sweeping()
    return applied_at


async def test_a_task_waiting_for_the_lock_that_is_no_change_does_not_defer_a_parts_plan(
    monkeypatch,
):
    """No apply waits for more than one part's merge and plan (the state dumper, a
    pending reload's done() also wait for the controller's lock)."""
    applied_at = await _after_start_sweep(monkeypatch, "dumper")
    assert len(applied_at[0]) == 5, "the first part (START_PART backends) planned at once"


async def test_a_change_waiting_for_the_lock_plans_the_part_with_its_own(monkeypatch):
    applied_at = await _after_start_sweep(monkeypatch, "change")
    assert applied_at[0] == set(), "the sweep's first apply came after its second part"


async def test_a_sweep_takes_no_step_while_a_change_is_on_its_way(monkeypatch):
    from synapse.change_gate import ChangeGate

    client = HeldClient()
    monkeypatch.setattr("synapse.haproxy.view.RuntimeClient", lambda *a, **k: client)
    client.state = {f"b{i}": {"x": srv(f"b{i}", "x", 1)} for i in range(3)}
    view, gate, lock = view_of(client), ChangeGate(), asyncio.Lock()
    gate.change()
    sweep = asyncio.create_task(view.sweep(lock, None, gate.turn))
    await asyncio.sleep(0.01)
    assert client.calls == ["names"], "only the names: no part read while the change comes"
    gate.done()
    assert await asyncio.wait_for(sweep, 5)
    assert client.calls[1:] == [["b0", "b1", "b2"]] and gate.waits >= 1


async def test_the_sweep_after_a_reload_waits_for_changes_start_wait_in_all(monkeypatch):
    """Its steps wait while a change is on its way, as a periodic sweep's, but longer in
    all (START_WAIT): a change to a backend it has not read yet reads that one first."""
    from synapse.change_gate import ChangeGate

    reader, view = await _swept_reader(monkeypatch, [f"b{i}" for i in range(3)])
    assert view.sweep_wait is None  # (a periodic sweep: any background job's MAX_WAIT)
    await reader.read(reloaded=True)  # every backend unread
    assert view.unread and view.sweep_wait == START_WAIT
    gate = ChangeGate()
    gate.change()  # (a stream of changes: the gate stays busy)
    turns = gate.job(0.05)
    assert await asyncio.wait_for(view.sweep(asyncio.Lock(), None, turns), 5)
    assert gate.waits >= 1 and turns.left <= 0 and not view.unread


async def test_the_sweep_after_a_reload_reads_smaller_parts_than_a_periodic_one(monkeypatch):
    """After a start or reload a part's apply renders and plans every backend in it: its
    parts are START_PART backends (a loop turn each), a periodic sweep's SWEEP_PART."""
    names = [f"b{i:02}" for i in range(SWEEP_PART + 1)]
    reader, view = await _swept_reader(monkeypatch, names)
    client = view.client
    await reader.read(reloaded=True)
    del client.calls[:]
    assert await view.sweep(asyncio.Lock())
    parts = [len(c) for c in client.calls if c != "names"]
    assert parts == [START_PART] * (len(names) // START_PART) + [len(names) % START_PART]
    assert set(client.steps[-len(parts) :]) == {START_STEP}
    del client.calls[:]
    assert await view.sweep(asyncio.Lock())  # (nothing unread: a periodic sweep)
    assert [len(c) for c in client.calls if c != "names"] == [SWEEP_PART, 1]
    assert set(client.steps[-2:]) == {READ_STEP}


async def test_the_readers_periodic_sweep_waits_while_a_change_is_on_its_way(monkeypatch):
    import synapse.change_gate as change_gate

    monkeypatch.setattr(change_gate, "MAX_WAIT", 5.0)
    client = HeldClient()
    client.state = {f"b{i}": {"x": srv(f"b{i}", "x", 1)} for i in range(3)}
    monkeypatch.setattr("synapse.haproxy.view.RuntimeClient", lambda *a, **k: client)
    now = [0.0]
    reader = RunningReader([client], None, lambda: now[0])  # type: ignore[list-item]
    reader.version = (2, 8, 0)
    assert reader.view is not None
    await reader.view.read_all()
    now[0] = 1e6  # a sweep is due
    read_before = len(client.calls)
    reader.change_gate.change()
    reader.start_sweeping(asyncio.Lock(), lambda: True, asyncio.sleep)
    try:
        reader._kick.set()
        await asyncio.sleep(0.1)
        assert client.calls[read_before:] == ["names"], "no part read while the change comes"
        reader.change_gate.done()
        for _ in range(100):
            if len(client.calls) > read_before + 1:
                break
            await asyncio.sleep(0.01)
        assert client.calls[read_before + 1 :] == [["b0", "b1", "b2"]]
    finally:
        await reader.stop_sweeping()
