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

After a crash with ``launch: false`` nothing is revived before the apply unless a master
answers already: the apply's own start waits for it (a revive waited too, then the apply's
start: the controller's lock was held for two start timeouts, 30 s, instead of one).
"""

from __future__ import annotations

import asyncio

from synapse.haproxy.managed import ManagedHAProxy, Supervisor
from synapse.haproxy.sockets import HAProxySocketError

ASK_S = 1.0  # the master's `show proc`: a master that takes longer is left to the start
CRASHED = "restarted after it exited"
BACK = "its own container runs it again"


async def revive_reason(managed: ManagedHAProxy | None, supervisor: Supervisor | None) -> str:
    """Why the apply about to run revives the managed HAProxy first ("": it does not)."""
    if managed is None or managed.alive:
        return ""
    if managed.settings.launch:
        return CRASHED if supervisor is not None and supervisor.first_crash else ""
    try:
        async with asyncio.timeout(ASK_S):
            proc = await managed.master.show_proc()
    except (HAProxySocketError, TimeoutError):
        return ""  # (none answers: the apply's start waits for one, ``elsewhere``)
    return BACK if proc.workers else ""
