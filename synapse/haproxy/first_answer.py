"""Whether HAProxy answers: the look the pending retry of a failed reload takes every second
(``pending``), so that HAProxy's first answer after an outage brings the retry forward
(``ReloadGate.heard``) instead of leaving it to wait out a backoff grown to 60 s.

What answering means is what the reload needs first: in managed mode the master's CLI
(`show proc`, the reload's first question: a stopped master takes the connection and never
answers while its worker still serves), in Airbnb mode the admin socket (`show info`: a
``reload_command``'s new worker is confirmed there; a stopped HAProxy has none). Without a
socket to ask (Airbnb mode, ``do_socket: false``) nothing looks: the backoff runs its course.

What silence means differs too (``silence_rule``). A stopped master takes the connection and
never answers: there, no answer within a look's period is silence. The admin socket is
the operator's too, capped (``stats maxconn``, 10 by default) and held by monitoring
clients: a question queued there for seconds is a busy HAProxy, not a gone one, and its
late answer is not HAProxy's return (read as one, it brought a hung reload_command's
retry forward to ~1 s after every failure, b593750's backoff gone). There, only a socket
nothing listens on (ECONNREFUSED) or that is missing (ENOENT) is silence; a slow or
otherwise failed question says nothing (None).

One question at a time: one a stopped HAProxy has not answered stays asked (its connection
queued) and the next looks wait for its answer, which comes the moment HAProxy runs again.
A new connection a second filled a stopped master's accept queue (11 connections) within
20 s: the reload attempts and an operator's `socat` were then refused ("Connection refused"
as if it were gone) instead of waiting.
"""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Awaitable, Callable

from synapse.haproxy.runtime import MasterClient, RuntimeClient
from synapse.haproxy.settings import Settings
from synapse.haproxy.sockets import HAProxySocketError

LOOK_PERIOD = 1.0  # seconds between looks; a question unanswered this long: silence (master)
ASK_TIMEOUT = 60.0  # a question left unanswered this long is given up and asked again
GONE_ERRNOS = frozenset({errno.ENOENT, errno.ECONNREFUSED})  # nothing listens: not running


def silence_rule(
    answered: bool, failure: BaseException | None, slow_is_silence: bool
) -> bool | None:
    """What one look says (pure): True HAProxy answered, False it is silent, None nothing.

    ``answered``: the question got its answer within the look's period; else ``failure`` is
    why it failed (None: it is still unanswered). ``slow_is_silence``: the master's CLI
    (a stopped master answers nothing, ever); the admin socket counts only a refused or
    missing socket as silence (module docstring)."""
    if answered:
        return True
    if slow_is_silence:
        return False
    cause = failure.__cause__ if failure is not None else None
    if isinstance(cause, OSError) and cause.errno in GONE_ERRNOS:
        return False
    return None  # a busy socket's queue, or a failure that does not say HAProxy is gone


class AnswerLook:
    """Asks ``ask`` (a question to HAProxy) one at a time: see the module docstring."""

    def __init__(self, ask: Callable[[], Awaitable[object]], slow_is_silence: bool = True) -> None:
        self._ask = ask
        self._slow_is_silence = slow_is_silence  # (``silence_rule``)
        self._asking: asyncio.Task[HAProxySocketError | None] | None = None

    async def answers(self, within: float) -> bool | None:
        """Whether HAProxy answered within ``within`` s (the question asked before, if it
        is still unanswered, or a new one): ``silence_rule``'s verdict."""
        if self._asking is None:
            self._asking = asyncio.create_task(self._answered())
        done, _ = await asyncio.wait({self._asking}, timeout=within)
        if not done:  # still unanswered: the question stays asked
            return silence_rule(False, None, self._slow_is_silence)
        asking, self._asking = self._asking, None
        failure = asking.result()
        return silence_rule(failure is None, failure, self._slow_is_silence)

    def drop(self) -> None:
        """No more looks for now (the reload is done, or synapse stops)."""
        if self._asking is not None:
            self._asking.cancel()
            self._asking = None

    async def _answered(self) -> HAProxySocketError | None:
        """None: answered; else why not."""
        try:
            await self._ask()
        except HAProxySocketError as err:
            return err
        return None


def answer_look(settings: Settings) -> AnswerLook | None:
    """The look for ``settings``' HAProxy (see the module docstring); None: none to take."""
    if settings.managed and settings.master_socket is not None:
        return AnswerLook(MasterClient(str(settings.master_socket), ASK_TIMEOUT).show_proc)
    if settings.runtime_sockets:
        admin = RuntimeClient(settings.runtime_sockets[0], ASK_TIMEOUT)
        return AnswerLook(admin.info, slow_is_silence=False)
    return None
