"""Whether an apply first runs the managed HAProxy again (``HAProxyController._revive``):
after a crash (launch: synapse starts it), or when the master HAProxy's own container
started answers again (``managed.launch: false``).

With ``launch: false`` a start waits for the master up to its timeout (``elsewhere``), and
between two starts the failed one's retry looks at the master socket every second
(``first_answer``). A master back in that backoff (or after a crash synapse gave up on)
brought the retry forward, but the retry's apply found the new worker answering on the admin
socket, sent its commands there and needed no reload: nothing adopted the master. /health
said "HAProxy is not running" for as long as no change needed a reload, and no one watched
the master (measured: not adopted 30 s after its return, a 60 s outage at a 3 s start
timeout; any outage whose end falls in a backoff at the default 15 s). So an apply that
finds ours down first asks the master socket, and one that answers is adopted.

One question at a time (``Asking``, as ``first_answer``'s): a stopped master (docker pause)
takes each connection and answers none. A new one per apply, given up after 1 s, filled its
CLI's accept queue in 11 applies (review s46: 14 applies took 10 s, then the master socket
refused connections, EAGAIN, the start's and an operator's). A master that answers but is
not one synapse can adopt (another PID namespace: ``adoption.unseen``) brings no revive: it
logged two errors on every apply; a start still says why (as before).

After a crash with ``launch: false`` nothing is revived before the apply unless a master
answers already: the apply's own start waits for it (a revive waited too, then the apply's
start: the controller's lock was held for two start timeouts, 30 s, instead of one).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from synapse.haproxy.adoption import unseen
from synapse.haproxy.answers import ProcInfo
from synapse.haproxy.first_answer import ASK_TIMEOUT
from synapse.haproxy.runtime import MasterClient

if TYPE_CHECKING:
    from synapse.haproxy.managed import ManagedHAProxy, Supervisor

ASK_S = 1.0  # the master's `show proc`: a master that takes longer is left to the start
CRASHED = "restarted after it exited"
BACK = "its own container runs it again"


async def revive_reason(managed: ManagedHAProxy | None, supervisor: Supervisor | None) -> str:
    """Why the apply about to run revives the managed HAProxy first ("": it does not)."""
    if managed is None or managed.alive:
        return ""
    if managed.settings.launch:
        return CRASHED if supervisor is not None and supervisor.first_crash else ""
    proc = await managed.asking.show_proc()
    if proc is None or not proc.workers:
        return ""  # (none answers: the apply's start waits for one, ``elsewhere``)
    if await asyncio.to_thread(unseen, proc.master_pid):
        return ""  # (not adoptable: a start says why, ``adoption.find_master``)
    return BACK


class Asking:
    """``managed.launch: false``: the master socket asked one question at a time, and the
    stop of synapse (``closing``: a start waiting for a master gives up, ``elsewhere``)."""

    def __init__(self, path: str) -> None:
        self.closing = asyncio.Event()
        self._client = MasterClient(path, ASK_TIMEOUT)
        self._asked: asyncio.Task[ProcInfo] | None = None

    async def show_proc(self) -> ProcInfo | None:
        """The master's `show proc` within ASK_S; None: no answer (the question asked before
        still unanswered: not asked again, none waited for)."""
        if self._asked is not None and not self._asked.done():
            return None
        self._asked = asked = asyncio.ensure_future(self._client.show_proc())
        asked.add_done_callback(_retrieved)
        await asyncio.wait({asked}, timeout=ASK_S)
        if not asked.done() or asked.cancelled() or asked.exception() is not None:
            return None
        return asked.result()

    def close(self) -> None:
        self.closing.set()
        if self._asked is not None:
            self._asked.cancel()


def _retrieved(task: asyncio.Task[ProcInfo]) -> None:
    if not task.cancelled():
        task.exception()  # (an HAProxySocketError: silence, not an unretrieved error)
