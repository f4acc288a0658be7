"""The express path: a membership change's runtime commands go out before the config text
is rendered (issue 15: synapse's own latency, watch event -> HAProxy changed).

Most changes only add, remove, reweigh or move servers of backends HAProxy runs. Their
commands follow from the new servers' specs and the running view alone
(``planner.backend_ops``), so the controller sends them first and renders, compares and
writes the text afterwards, off the path to HAProxy. It takes this path only when that
gives exactly what the whole plan would:

- the last apply ended with nothing left for a reload (``ready``), and the config file
  holds the renderer's last render (the same parse object): it is what HAProxy runs;
- the runtime view is trusted, and each backend of the change read since the last reload
  or start and since the last commands to it (neither ``unread`` nor ``stale``: the apply
  reads those it changes first). The other backends may still wait for the after-start
  sweep: the commands, the ids and the whole plan that follows (``_plan``: only the
  backends to plan, read ones) look at the change's backends alone, and the sweep keeps
  the view's newer state of a backend an apply read or followed after its read began;
- every changed service changed only in its servers (``Renderer.membership_specs``:
  same config object, default layout, no option only a reload can change);
- each of their backends runs, and planning it needs no reload.

Anything else (a structural change anywhere in the batch, a failed command) goes the usual
way, from the top: the file still always says what HAProxy runs, and structural changes
still pass the reload gate. The whole plan that follows skips the backends sent here
(their view is stale until read again, which puts them back among those planned).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field

from synapse.haproxy.ops import Op
from synapse.haproxy.planner import backend_ops
from synapse.haproxy.reader import RunningReader
from synapse.haproxy.render import Renderer
from synapse.haproxy.running import Capabilities, RunningState
from synapse.model import DesiredService

RunOps = Callable[[Sequence[Op]], Awaitable[tuple[list[str], list[str]]]]


@dataclass(frozen=True)
class Early:
    """What the express path sent: commands applied, failures, the backends planned."""

    applied: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    backends: frozenset[str] = frozenset()


NOTHING = Early()


class Express:
    def __init__(
        self, reader: RunningReader, caps: Callable[[], Capabilities], run: RunOps
    ) -> None:
        self._reader, self._caps, self._run = reader, caps, run  # the controller's
        # The last apply left nothing for a reload: HAProxy runs what the file says.
        self.ready = False
        self.sent = 0  # applies whose commands went out before their render (for tests)
        self.backends: frozenset[str] = frozenset()  # what this apply's express path planned
        self._owed: frozenset[str] = frozenset()  # of those, the ones it had commands for
        self._sending: list[DesiredService] | None = None  # this apply's services
        # The services of the last apply when its render is owed: sent, nothing new there.
        self._since: list[DesiredService] | None = None

    async def send(
        self, renderer: Renderer, desired: list[DesiredService], running: RunningState
    ) -> Early:
        """Plan (``plan``) and run the commands; NOTHING when there are none. The backends
        are followed or read again (``RunningReader.ran``), as after any command."""
        reader = self._reader
        ready, self.ready = self.ready, False  # (set again by an apply that ends clean)
        self.backends = frozenset()
        since, self._since, self._sending = self._since, None, desired
        if not ready or running.backends is None:  # (else id_hints parses the file's ids)
            return NOTHING
        ids = reader.id_hints(running)
        unread, stale = reader.unread, reader.stale()  # (the apply just read its own)
        planned = plan_early(renderer, desired, running, ids, self._caps(), unread, stale, since)
        if planned is None or not planned[0]:
            return NOTHING
        ops, backends = planned
        applied, failures = await self._run(ops)
        self._owed = frozenset(op.backend for op in ops)  # (read back or followed: ``run``)
        self.sent += 1
        self.backends = backends
        return Early(applied, failures, backends)

    def deferred(self) -> frozenset[str]:
        """This apply's render is owed (``synapse.haproxy.owed``): no plan follows now, so
        the backends it sent commands to are for the plan that pays it."""
        self.backends, self._since = frozenset(), self._sending
        return self.owed()

    def owed(self) -> frozenset[str]:
        """The backends it sent commands to, once: the plan that left them out keeps them
        among the backends to plan (``RunningReader.planned``), as if it had planned them."""
        owed, self._owed = self._owed, frozenset()
        return owed

    def unplanned(self, only: set[str] | None, backends: Collection[str]) -> set[str] | None:
        """The whole plan's scope (``only``, None: all ``backends``) without the backends
        sent here: their view is stale until read again (which puts them back in scope).
        Once: only the plan right after them leaves them out (not one after a reload)."""
        sent, self.backends = self.backends, frozenset()
        if not sent:
            return only
        return (set(backends) if only is None else only) - sent


def plan_early(
    renderer: Renderer,
    desired: list[DesiredService],
    running: RunningState,
    ids: Mapping[str, Mapping[str, int]],
    caps: Capabilities,
    unread: Collection[str],
    stale: Collection[str] = (),
    since: list[DesiredService] | None = None,
) -> tuple[list[Op], frozenset[str]] | None:
    """The commands of a membership-only change and the backends they cover (None: not
    such a change, plan it the usual way). Pure: the caller knows the last apply ended
    with nothing left for a reload. ``unread``, ``stale``: backends whose view is not
    HAProxy's (after a start an unread one is empty, after a reload the old process's):
    a change touching one is planned the usual way. ``since``: see
    ``Renderer.membership_specs``."""
    backends = running.backends
    if backends is None or not caps.runtime_api:
        return None
    if running.config is None or running.config is not renderer.last_parsed:
        return None
    specs = renderer.membership_specs(desired, ids, since)
    if not specs:
        return None
    ops: list[Op] = []
    reasons: list[tuple[str, str]] = []
    for spec in specs:
        servers = backends.get(spec.name)
        if servers is None or spec.name in unread or spec.name in stale:
            return None
        backend_ops(spec, servers, caps, ops, reasons)
        if reasons:
            return None
    return ops, frozenset(spec.name for spec in specs)
