"""Whether HAProxy answers: the look the pending retry of a failed reload takes every second
(``pending``), so that HAProxy's first answer after an outage brings the retry forward
(``ReloadGate.heard``) instead of leaving it to wait out a backoff grown to 60 s.

What answering means is what the reload needs first: in managed mode the master's CLI
(`show proc`, the reload's first question: a stopped master takes the connection and never
answers while its worker still serves), in Airbnb mode the admin socket (`show info`: a
``reload_command``'s new worker is confirmed there; a stopped HAProxy has none). Without a
socket to ask (Airbnb mode, ``do_socket: false``) nothing looks: the backoff runs its course.

One question at a time: one a stopped HAProxy has not answered stays asked (its connection
queued) and the next looks wait for its answer, which comes the moment HAProxy runs again.
A new connection a second filled a stopped master's accept queue (11 connections) within
20 s: the reload attempts and an operator's `socat` were then refused ("Connection refused"
as if it were gone) instead of waiting.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from synapse.haproxy.runtime import MasterClient, RuntimeClient
from synapse.haproxy.settings import Settings
from synapse.haproxy.sockets import HAProxySocketError

LOOK_PERIOD = 1.0  # seconds between looks; a question unanswered this long: silence
ASK_TIMEOUT = 60.0  # a question left unanswered this long is given up and asked again


class AnswerLook:
    """Asks ``ask`` (a question to HAProxy) one at a time: see the module docstring."""

    def __init__(self, ask: Callable[[], Awaitable[object]]) -> None:
        self._ask = ask
        self._asking: asyncio.Task[bool] | None = None

    async def answers(self, within: float) -> bool:
        """Whether HAProxy answered within ``within`` s (the question asked before, if it
        is still unanswered, or a new one)."""
        if self._asking is None:
            self._asking = asyncio.create_task(self._answered())
        done, _ = await asyncio.wait({self._asking}, timeout=within)
        if not done:
            return False  # still silent: the question stays asked
        asking, self._asking = self._asking, None
        return asking.result()

    def drop(self) -> None:
        """No more looks for now (the reload is done, or synapse stops)."""
        if self._asking is not None:
            self._asking.cancel()
            self._asking = None

    async def _answered(self) -> bool:
        try:
            await self._ask()
        except HAProxySocketError:
            return False
        return True


def answer_look(settings: Settings) -> AnswerLook | None:
    """The look for ``settings``' HAProxy (see the module docstring); None: none to take."""
    if settings.managed and settings.master_socket is not None:
        return AnswerLook(MasterClient(str(settings.master_socket), ASK_TIMEOUT).show_proc)
    if settings.runtime_sockets:
        return AnswerLook(RuntimeClient(settings.runtime_sockets[0], ASK_TIMEOUT).info)
    return None
