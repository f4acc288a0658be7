"""Leftovers: servers that left a backend and stay in HAProxy in maintenance, bounded.

With ``remove_servers: maint`` (the default) a server that leaves is only put into
maintenance: what it still serves finishes there, and one that comes back is made ready
again (no `add server`). Only a reload drops them, and a change of servers never reloads:
where instances come with new addresses (autoscaling) they piled up without end (4,000
departures: 4,004 servers in the backend, 220,372 series of HAProxy's exporter, +16 MB of
HAProxy's memory, +17 MB of synapse's, a 747 KB /status).

So a backend keeps at most ``cap`` leftovers (the larger of MIN_CAP and its wanted
servers: a redeploy that replaces every server keeps all the old ones, the one after it
deletes those); beyond that the ones longest in maintenance go (`del server`). Never one
that leaves in the same plan (it gets its `state maint` first; the earliest delete is the
next plan of the backend), and HAProxy refuses the delete while the server has
connections: the plan asks again at the next one (a tolerated failure; the backend stays
among those planned, so the background sweep asks too).

Only where a server can be added back at runtime (HAProxy 2.4 or later, whose `del server`
this needs, and a dynamic algorithm). Elsewhere every new server comes with a reload,
which drops the leftovers: they stay bounded by the servers of the last reload, and one
deleted that comes back would cost a reload instead of a `state ready`.
"""

from __future__ import annotations

from collections.abc import Sequence

from synapse.haproxy.running import Capabilities, RunningServer
from synapse.haproxy.specs import BackendSpec

MIN_CAP = 16  # leftovers a backend keeps however few servers it wants


def cap(backend: BackendSpec) -> int:
    """How many leftovers ``backend`` keeps in maintenance."""
    return max(MIN_CAP, len(backend.servers))


def old_leftovers(
    backend: BackendSpec, left: Sequence[RunningServer], capabilities: Capabilities
) -> list[str]:
    """The leftovers of ``backend`` to delete, longest in maintenance first. ``left``: the
    servers HAProxy has that ``backend`` does not want (static lines aside)."""
    if capabilities.remove_servers != "maint":  # (`delete` deletes every one already)
        return []
    if not capabilities.can_add_servers or not backend.dynamic:
        return []
    excess = len(left) - cap(backend)
    if excess <= 0:
        return []
    held = sorted((s for s in left if s.forced_maint), key=lambda s: (s.changed_at, s.name))
    return [server.name for server in held[:excess]]
