"""The first batch on a kept connection (``RuntimeClient._checked_ask``): sent again on a
fresh connection when the kept one is dead or a stopping worker's, never when it only timed
out: a stalled HAProxy reads the batch after the stall and runs it, and the copy sent again
ran every command twice ("custom id already used", a needless reload; overload review).
Scripted sessions: no socket."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from synapse.haproxy.runtime import RuntimeClient

INFO = "Name: HAProxy\nPid: 100\n"


class Kept:
    def __init__(self, answers: list[str], timed_out: bool) -> None:
        self.answers, self.timed_out, self.sent = answers, timed_out, 0

    async def ask(self, commands: list[str]) -> list[str]:
        self.sent += 1
        return self.answers


class Fresh:
    def __init__(self) -> None:
        self.opened = 0

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[Fresh]:
        self.opened += 1
        yield self

    async def ask(self, commands: list[str]) -> list[str]:
        return ["Success"] * len(commands)


def client_with(fresh: Fresh) -> RuntimeClient:
    client = RuntimeClient("/nonexistent")
    client.session = fresh.session  # type: ignore[method-assign]
    return client


async def test_a_kept_connection_that_timed_out_is_not_sent_the_batch_again() -> None:
    fresh = Fresh()
    kept = Kept([], timed_out=True)
    _, answers = await client_with(fresh)._checked_ask(kept, ["set weight b/s 5"])  # type: ignore[arg-type]
    assert answers == [] and fresh.opened == 0  # (lost: the re-plan reads what HAProxy did)


async def test_a_dead_kept_connection_has_the_batch_sent_on_a_fresh_one() -> None:
    fresh = Fresh()
    kept = Kept([], timed_out=False)  # (closed by HAProxy: no answer at once)
    _, answers = await client_with(fresh)._checked_ask(kept, ["set weight b/s 5"])  # type: ignore[arg-type]
    assert answers == ["Success"] and fresh.opened == 1


async def test_a_kept_connection_that_answers_keeps_the_batch() -> None:
    fresh = Fresh()
    kept = Kept([INFO, "ok"], timed_out=False)
    _, answers = await client_with(fresh)._checked_ask(kept, ["set weight b/s 5"])  # type: ignore[arg-type]
    assert answers == ["ok"] and fresh.opened == 0


async def test_a_stopping_worker_s_batch_goes_to_a_fresh_connection_even_if_it_timed_out() -> None:
    fresh = Fresh()
    kept = Kept([INFO + "Stopping: 1\n"], timed_out=True)
    _, answers = await client_with(fresh)._checked_ask(kept, ["set weight b/s 5"])  # type: ignore[arg-type]
    assert answers == ["Success"] and fresh.opened == 1
