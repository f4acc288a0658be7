"""HAProxy's DOWN servers fed back into the zone decision (docs/zone-routing.md).

The decision takes its servers from the registry. When the zones it spills to die with
their records kept (until nerve's sessions expire), HAProxy marks their servers DOWN
(checks, ``observe``) but fails over only to backups, never to the local zone's servers
at weight 0 (spill, evacuation): every request would be a 503 while the local zone sits
idle. So while a zone-routed service is not served by its local zone alone (or had a
server DOWN at the last look: to see it come back; ``ZoneRouter.watched``), this reads
its backend from HAProxy (all of them on one connection, one round trip: many of them, one
`show servers state` of every backend; a few, one `show servers state <backend>` each; the
rows parsed for state labels only; synapse.haproxy.looks) every POLL_S, at least PACE times
the loop's CPU a look took apart (at 1,000 stranded services 0.34-0.43 s, review s39), and, when the
DOWN set changed, gives it to the router and has the reconciler hand over again: the
new decision is runtime ``set weight``, no reload.

A service served by its local zone is read too, every LOCAL_S: HAProxy fails
over to the backups by itself, but while a dead (or hung) local zone's records linger the
decision and /status would say "local", share 1.0, while the backups answer everything.
Counted out, its DOWN servers make the decision what HAProxy already does (the backups'
weights are those of the local zone lost: the traffic does not move), and /status true.

While a service is *stranded* (``ZoneRouter.stranded``: served by the other zones, its
backups, while its local zone has usable servers at weight 0, evacuated or below
min_local), the looks come every FAST_S: should the backups die, HAProxy has no server
with a weight left (it never picks a weight-0 one, not even on a retry) and answers 503
to every request until a look gives the local zone its weights back. Every look reads
HAProxy (``Looks.servers_of``: the probes' FRESH_FOR cache is not for it).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from smartstack.logs import event

if TYPE_CHECKING:
    from synapse.contract import Applier
    from synapse.reconciler import Reconciler
    from synapse.zone_apply import ZoneRouter

log = logging.getLogger("synapse.zone_health")

POLL_S = 0.5  # between looks: with `observe`, the detection time after a dead spill target
FAST_S = 0.1  # between looks while a service is stranded (module docstring): its 503 window
PACE = 20.0  # sleeps at least this many times a look's CPU time (~5 % of the loop at most)
LOCAL_S = 2.0  # services served locally (most are, at fleet scale) are read this often
REASON = "zone: HAProxy's DOWN servers changed"


async def watch(reconciler: Reconciler) -> None:
    """Look until cancelled (the daemon runs it beside the reconciler)."""
    read_local = -LOCAL_S
    while True:
        started, cpu = time.monotonic(), time.thread_time()
        local = started - read_local >= LOCAL_S
        read_local = started if local else read_local
        try:
            changed = await look(reconciler.zones, reconciler.applier, local)
        except Exception:  # must not end the watch: the next look tries again
            log.exception("reading HAProxy's server states for zone routing failed")
            changed = []
        if changed:
            reconciler.wake(REASON, select=False)
        # Paced on the loop's CPU, not the look's wall time, most of it waiting for HAProxy's
        # answer (it was 0.6 s between stranded looks at 1,000 services, review s39).
        await asyncio.sleep(max(pause(reconciler.zones), PACE * (time.thread_time() - cpu)))


def pause(router: ZoneRouter) -> float:
    """Seconds until the next look: FAST_S while a service is stranded, else POLL_S."""
    return FAST_S if router.stranded() else POLL_S


async def look(router: ZoneRouter, applier: Applier | None, local: bool = True) -> list[str]:
    """Read the watched services' backends (``local``: those served locally too); update
    ``router.down``; the services whose DOWN set changed. A backend HAProxy does not answer
    for keeps its last set."""
    watched = router.watched(local)
    if applier is None or not watched:
        return []
    found = await applier.servers_of(sorted(set(watched.values())))
    changed = []
    for name, backend in watched.items():
        states = found.get(backend)
        if states is None or name not in router.decisions:  # (or a SIGHUP dropped it)
            continue
        down = frozenset(server for server, state in states.items() if state == "DOWN")
        if down == router.down.get(name, frozenset()):
            continue
        if down:
            router.down[name] = down
        else:
            router.down.pop(name, None)
        changed.append(name)
        event(log, "zone_haproxy_down_changed", service=name, down=sorted(down)[:20],
              count=len(down))  # fmt: skip
    return changed
