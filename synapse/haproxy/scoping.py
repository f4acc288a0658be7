"""Scoping what to plan, for the reader (``synapse.haproxy.reader``): which backends an
apply plans server by server, and which running ids the renderer must take again.

It uses object identity: the server ids HAProxy uses (``RunningIds``), so the renderer
keeps them, and the backends whose running servers changed since the renderer last
rendered; the backends worth planning server by server are those whose running servers
changed, or that had something to do, since the last plan (a backend outside them has the
same spec and servers a plan found nothing for).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from synapse.haproxy.configtext import ParsedConfig
from synapse.haproxy.desired import DesiredConfig
from synapse.haproxy.ops import Plan
from synapse.haproxy.running import Capabilities, RunningState
from synapse.haproxy.view import RunningIds, file_ids


class PlanScope:
    def __init__(self) -> None:
        self._ids = RunningIds()
        # Backends whose running servers changed since the main renderer last rendered.
        self._ids_changed: set[str] = set()
        # Backends to plan server by server (None: all of them), and what they are
        # relative to: the config and capabilities of the last plan.
        self._to_plan: set[str] | None = None
        self._plan_base: ParsedConfig | None = None
        self._plan_caps: Capabilities | None = None

    def scope_changed(self, replaced: Collection[str]) -> None:
        """The running servers of ``replaced`` changed: render and plan them."""
        self._ids_changed |= set(replaced)
        if self._to_plan is not None:
            self._to_plan |= set(replaced)

    @property
    def plans_owed(self) -> bool:
        """Whether some backend (or all: none planned yet) waits for a plan."""
        return self._to_plan is None or bool(self._to_plan)

    def ids_changed(self, running: RunningState) -> set[str] | None:
        """The backends whose running ids may differ since the last render (None: any)."""
        return self._ids_changed if running.backends is not None else None

    def rendered(self) -> None:
        self._ids_changed = set()

    def id_hints(self, running: RunningState) -> Mapping[str, Mapping[str, int]]:
        """Server ids HAProxy uses (runtime API), else the ones in the config file."""
        if running.backends is not None:
            return self._ids.use(running.backends)
        return file_ids(running.config)

    def backends_to_plan(
        self, desired: DesiredConfig, running: RunningState, caps: Capabilities
    ) -> set[str] | None:
        """The backends worth planning server by server (None: all of them)."""
        if caps != self._plan_caps:
            self._plan_caps, self._to_plan = caps, None
        delta = desired.delta
        if running.backends is None or self._to_plan is None or delta is None:
            return None
        if delta.base is not self._plan_base:
            return None
        return self._to_plan | delta.backends

    def plan_later(self, backends: Collection[str]) -> None:
        """No plan now (an express change's render is owed): the next one plans these."""
        if self._to_plan is not None:
            self._to_plan.update(backends)

    def planned(
        self,
        desired: DesiredConfig,
        running: RunningState,
        result: Plan,
        also: Collection[str] = (),
    ) -> None:
        """After a plan: only the backends it found something to do for stay to plan, and
        ``also`` (those the express path sent commands to, left out of this plan: a refused
        ``del server`` there must be tried again)."""
        if running.backends is None:
            self._to_plan, self._plan_base = None, None
            return
        self._to_plan = set(result.active).union(also)
        self._plan_base = desired.parsed
