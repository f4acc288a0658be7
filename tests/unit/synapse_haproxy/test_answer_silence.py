"""What a look at HAProxy says while a failed reload waits (``synapse.haproxy.first_answer``):
silence is a stopped master, or an admin socket nothing listens on; a slow answer on the
operator's busy admin socket says nothing (pure: fake questions, no sockets)."""

from __future__ import annotations

import asyncio
import errno
import os

import pytest
from prometheus_client import CollectorRegistry

from synapse.haproxy import pending as pending_module
from synapse.haproxy.first_answer import AnswerLook, silence_rule
from synapse.haproxy.metrics import HAProxyMetrics
from synapse.haproxy.ops import Reload
from synapse.haproxy.pending import PendingReload
from synapse.haproxy.reload_gate import ReloadGate
from synapse.haproxy.sockets import CommandFailed, SocketUnavailable


def failure(code: int | None) -> SocketUnavailable:
    """The error a question fails with (``_open``, ``unix_request``: the OSError as cause)."""
    err = SocketUnavailable("admin.sock: failed")
    if code is not None:
        err.__cause__ = OSError(code, os.strerror(code))
    return err


@pytest.mark.parametrize(
    ("answered", "why", "master", "admin"),
    [
        (True, None, True, True),  # an answer is an answer
        (False, None, False, None),  # unanswered yet: the master stopped; the admin busy
        (False, failure(errno.ECONNREFUSED), False, False),  # nothing listens
        (False, failure(errno.ENOENT), False, False),  # the socket is gone
        (False, failure(errno.ECONNRESET), False, None),  # (the next look will tell)
        (False, failure(None), False, None),  # e.g. no answer within ASK_TIMEOUT
        (False, CommandFailed("show info", "Permission denied"), False, None),
    ],
)
def test_the_silence_rule(answered, why, master, admin) -> None:
    assert silence_rule(answered, why, slow_is_silence=True) is master
    assert silence_rule(answered, why, slow_is_silence=False) is admin


async def test_an_admin_look_queued_on_a_busy_socket_says_nothing_until_refused() -> None:
    """Monitoring clients hold the capped admin socket: the question waits for a slot,
    then is answered; neither is silence. A refused connection is."""
    slot, outcomes = asyncio.Event(), iter([None, errno.ECONNREFUSED, errno.ENOENT])

    async def ask() -> None:
        await slot.wait()
        code = next(outcomes)
        if code is not None:
            raise failure(code)

    look = AnswerLook(ask, slow_is_silence=False)
    assert [await look.answers(0.01) for _ in range(3)] == [None, None, None]
    slot.set()
    assert await look.answers(1.0) is True
    assert await look.answers(1.0) is False and await look.answers(1.0) is False
    look.drop()


async def test_a_hung_reload_keeps_its_backoff_while_the_admin_socket_answers_late(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each look's question waits longer than a look's period, then is answered (a busy
    socket): the retry waits out its 2 s backoff. Before, the late answer read as
    HAProxy's return: the retry ran 1 s after the failure, after every failure."""
    monkeypatch.setattr(pending_module, "LOOK_PERIOD", 0.01)
    loop = asyncio.get_running_loop()
    g = ReloadGate(0.0, 0.0, loop.time, lambda: 0.5)
    asked = 0

    async def ask() -> None:
        nonlocal asked
        asked += 1
        await asyncio.sleep(0.05)  # (five looks' periods in the socket's queue)

    applied = asyncio.Event()

    async def apply() -> None:
        applied.set()

    pending = PendingReload(g, asyncio.Lock(), apply, HAProxyMetrics(CollectorRegistry()),
                            AnswerLook(ask, slow_is_silence=False))  # fmt: skip
    g.failed()
    assert g.failed() == 2.0
    began = loop.time()
    pending.wait_for_turn(Reload((("config", "section backend web changed"),)))
    await asyncio.wait_for(applied.wait(), 5.0)
    assert loop.time() - began >= 1.9 and asked > 10  # (looked all along)
    await pending.cancel()
