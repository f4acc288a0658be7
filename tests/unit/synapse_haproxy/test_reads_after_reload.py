"""Reads right after a reload reach the new HAProxy process, not the old worker.

With `expose-fd listeners` the old and the new worker share the admin socket's listener
until the master tells the old one to stop (and while it soft-stops): a connection made
right after the reload may still be accepted by the old worker, whose answer describes the
config before the reload ("backend other is not running" for a backend just added: a CI
failure of test_reload_keepalive.py). Scripted clients: no socket.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable

import pytest

from synapse.haproxy import command_reload, runtime, view
from synapse.haproxy.command_reload import CommandReload, is_new
from synapse.haproxy.runtime import RuntimeClient
from synapse.haproxy.sockets import SocketUnavailable
from synapse.haproxy.view import NEW_PROCESS_ASKS, RunningView


class TwoWorkers:
    """backend_names answered by the old worker ``old_answers`` times, then the new one."""

    path, timeout = "/nonexistent", 1.0

    def __init__(self, old_answers: int) -> None:
        self.old_answers = old_answers
        self.asked = self.released = 0

    async def backend_names(self) -> tuple[str, list[str]]:
        self.asked += 1
        if self.asked <= self.old_answers:
            return "100", ["web"]
        return "200", ["other", "web"]

    async def release(self) -> None:
        self.released += 1


@pytest.fixture(autouse=True)
def no_pauses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(view, "NEW_PROCESS_PAUSE", 0.0)
    monkeypatch.setattr(runtime, "STOPPING_PAUSE", 0.0)
    monkeypatch.setattr(command_reload, "LOOK_PAUSE", 0.0)


def view_of(client: TwoWorkers) -> RunningView:
    return RunningView(client, 30.0, lambda: 0.0)  # type: ignore[arg-type]


async def test_the_names_are_asked_again_until_the_new_process_answers():
    client = TwoWorkers(old_answers=3)
    names = view_of(client)
    await names.read_names(serving="200")
    assert names.pid == "200" and set(names.backends) == {"other", "web"}
    assert client.asked == 4 and client.released == 3  # each time on a fresh connection


async def test_without_a_confirmed_pid_the_first_answer_stands():
    client = TwoWorkers(old_answers=3)
    names = view_of(client)
    await names.read_names()
    assert names.pid == "100" and client.asked == 1 and client.released == 0


async def test_a_new_process_that_never_answers_is_asked_a_bounded_number_of_times():
    client = TwoWorkers(old_answers=10_000)
    names = view_of(client)
    await names.read_names(serving="200")
    assert client.asked == NEW_PROCESS_ASKS + 1 and names.pid == "100"


def info(pid: str, stopping: bool) -> str:
    return f"Name: HAProxy\nPid: {pid}\nStopping: {int(stopping)}\n"


class ScriptedSessions:
    """RuntimeClient.session yielding sessions whose answers come from a script."""

    def __init__(self, script: list[list[str]]) -> None:
        self.script, self.opened = script, 0

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[ScriptedSessions]:
        self.opened += 1
        yield self

    async def ask(self, commands: list[str]) -> list[str]:
        return self.script.pop(0)


def client_with(script: list[list[str]]) -> tuple[RuntimeClient, ScriptedSessions]:
    client = RuntimeClient("/nonexistent")
    sessions = ScriptedSessions(script)
    client.session = sessions.session  # type: ignore[method-assign]
    return client, sessions


async def test_a_fresh_connection_the_stopping_worker_answered_is_asked_again():
    client, sessions = client_with(
        [[info("100", True), "old"], [info("100", True), "old"], [info("200", False), "new"]]
    )
    answers = await client.ask_kept(["show info", "show backend"])
    assert answers[1] == "new" and sessions.opened == 3


async def test_a_process_that_keeps_answering_stopping_is_asked_a_bounded_number_of_times():
    client, sessions = client_with([[info("100", True), "old"]] * 50)
    answers = await client.ask_kept(["show info", "show backend"])
    assert answers[1] == "old" and sessions.opened == runtime.STOPPING_ASKS


async def test_a_fresh_connection_without_an_answer_is_not_asked_again():
    client, sessions = client_with([[], [info("200", False), "new"]])
    assert await client.ask_kept(["show info", "show backend"]) == []
    assert sessions.opened == 1


class Answering:
    """`show info` answered by the processes of ``script`` in turn (the last one stays)."""

    path = "/nonexistent"

    def __init__(self, *script: tuple[str, bool]) -> None:
        self.script = list(script)

    async def info(self) -> dict[str, str]:
        pid, stopping = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        return {"Pid": pid, "Stopping": "1" if stopping else "0"}


def clock_of(step: float) -> Callable[[], float]:
    now = [0.0]

    def clock() -> float:
        now[0] += step
        return now[0]

    return clock


async def test_a_worker_still_stopping_from_the_reload_before_is_not_taken_for_the_new_one():
    """The CI failure: A (stopping, from the last reload) answered before the command and B
    (the live one) right after it, before C (the new one) came: B was confirmed."""
    before_client = Answering(("A", True), ("B", False))
    reload = CommandReload(before_client, clock_of(0.01))  # type: ignore[arg-type]
    before = await reload.answering()
    assert before == {"A", "B"}
    reload.client = Answering(("A", True), ("B", False), ("B", False), ("C", False))  # type: ignore[assignment]
    assert await reload.new_worker(before, timeout=5.0) == "C"


async def test_a_process_that_is_stopping_is_never_the_new_one():
    reload = CommandReload(Answering(("X", True)), clock_of(1.0))  # type: ignore[arg-type]
    assert not is_new({"Pid": "X", "Stopping": "1"}, set())
    assert is_new({"Pid": "Y", "Stopping": "0"}, {"X"})
    assert await reload.new_worker(set(), timeout=3.0) is None  # (logged: unconfirmed)
    assert len(await reload.answering()) == 1


async def test_an_error_after_a_first_answer_keeps_what_answered():
    class Failing(TwoWorkers):
        async def backend_names(self) -> tuple[str, list[str]]:
            if self.asked:
                raise SocketUnavailable("gone")
            return await super().backend_names()

    client = Failing(old_answers=5)
    names = view_of(client)  # type: ignore[arg-type]
    await names.read_names(serving="200")
    assert names.pid == "100" and client.asked == 1


async def test_the_processes_of_past_reloads_are_never_taken_for_a_new_one():
    """Reload 1 confirmed B. Before reload 2 the answer came from A, the worker reload 1
    replaced, its master not yet telling it to stop (`Stopping: 0`): B, live, must not pass
    as reload 2's new process."""
    reload = CommandReload(Answering(("A", False), ("B", False)), clock_of(0.01))  # type: ignore[arg-type]
    assert await reload.new_worker({"A"}, timeout=5.0) == "B"  # reload 1
    reload.client = Answering(("A", False))  # type: ignore[assignment]
    before = await reload.answering()
    assert before == {"A", "B"}
    reload.client = Answering(("B", False), ("C", False))  # type: ignore[assignment]
    assert await reload.new_worker(before, timeout=5.0) == "C"
