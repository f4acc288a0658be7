"""After the managed HAProxy was started again from its files (it had crashed, or the
candidate cannot be installed): what synapse reads and plans at once, like after a start.

The new process runs the config file (what HAProxy ran last) with the states of the
server-state file. Reading all of its runtime state at once (1.9 MB of `show servers
state` at 1,000 x 20, ~200 ms of parsing, then a plan of every backend) would hold the
controller's lock on the path of the first change after the restart. So, as after a
reload or start (``synapse.haproxy.confirm``), only the backends' names are read (the
structure is checked), and at once the servers of the backends that may differ from
what synapse wants:

- those whose service differs from the one the file was rendered from (the bridge
  changes them: a change that came while HAProxy was down, or a refused candidate);
- those runtime commands changed that the server-state file may not hold yet: the
  dumper's unsaved ones (touched, not yet written or found unchanged by a round), and
  any changed in the last RECENT_S seconds (a margin for a round in flight).

The background sweep reads and plans the others, a part at a time; a config of
SWEEP_PART backends or fewer is read whole.
"""

from __future__ import annotations

from collections.abc import Collection

from synapse.haproxy.bridge import Bridge, Layout, build_bridge
from synapse.haproxy.ops import Plan
from synapse.haproxy.reader import RunningReader
from synapse.haproxy.running import Capabilities
from synapse.haproxy.view import SWEEP_PART
from synapse.model import DesiredService

RECENT_S = 10.0  # runtime commands this recent may be missing from the server-state file


def read_at_revive(
    layout: Layout | None,
    desired: Collection[DesiredService],
    unread: Collection[str],
    recent: set[str],
) -> set[str] | None:
    """The ``unread`` backends to read and plan at once (None: all, a small config).
    Without a layout (no bridge) only the ``recent`` ones: an apply plans them."""
    if len(unread) <= SWEEP_PART:
        return None
    changed: set[str] = set()
    if layout is not None:
        rendered = {service.name: service for service in layout.services}
        changed = {s.backend_name for s in desired if rendered.get(s.name) is not s}
    return (changed | recent) & set(unread)


async def revived(
    reader: RunningReader,
    layout: Layout | None,
    desired: list[DesiredService],
    capabilities: Capabilities,
    serving: str | None = None,
) -> Bridge | None:
    """Read the restarted HAProxy as above; the bridge (the file's structure with today's
    servers) planned on what was read, or None (nothing to bridge, or only a reload gets
    there: an apply plans it). ``serving``: the started worker's pid."""
    running = await reader.read(reloaded=True, serving=serving)
    if running.backends is None:
        return None  # not answering: the next apply reads it whole
    recent = reader.touched_within(RECENT_S) | reader.unsaved()
    now = read_at_revive(layout, desired, reader.unread, recent)
    if now is None or now:
        running = await reader.read(set(), now)
    if layout is None or running.backends is None:
        return None  # no bridge: an apply plans what was read, the sweep the rest
    only = now if reader.unread else None  # (the others: planned as the sweep reads them)
    bridge = build_bridge(layout, desired, running, reader.id_hints(running), capabilities, only)
    if bridge is not None:  # the next apply plans from here, scoped (``reader.planned``)
        active = frozenset(op.backend for op in bridge.ops)
        reader.planned(bridge.config, running, Plan(bridge.ops, None, active))
    return bridge
