"""The desired list a round hands over, kept between rounds: a round pays for what changed.

At 1,000 services a change touches one, but building the list anew walked every service
in Python each round (its selection, its DesiredService, the zone router's cache): about
a third of a loaded change's reconciler CPU (issue 15, profile of a loaded round). So the
list is kept with each service's slot in it, and a round finds the services to look at
again by identity, in C (``identity.moved``): a service whose ``desired`` is not the
object its slot was made from (the reconciler sets it to None when the selection or the
config changed), and the zone-routed ones (a zone decision may change by itself: the
router caches by its inputs). Anything that changes a slot's length (a service gets or
loses its first servers, a zone backend appears) or the services themselves (SIGHUP:
a new mapping) builds the whole list again, as before.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Collection, Mapping

from synapse.identity import moved
from synapse.model import DesiredService
from synapse.reload_diff import ServiceState

Route = Callable[[DesiredService], list[DesiredService]]
_desired_of = operator.attrgetter("desired")


class _Empty:
    """The slot of a service with nothing for HAProxy (no selection yet, HAProxy
    disabled): never anyone's ``desired``, so the service is looked at every round."""


_EMPTY = _Empty()


class DesiredList:
    def __init__(self, route: Route) -> None:
        self._route = route  # the zone router's: weights and zone backends
        self._services: Mapping[str, ServiceState] | None = None  # what it was built from
        self._states: list[ServiceState] = []
        self._names: list[str] = []
        self._made: list[DesiredService | _Empty] = []  # per service: what its slot holds
        self._slots: list[tuple[int, int]] = []  # per service: (start, length) in _list
        self._live: set[int] = set()  # the zone-routed services' positions
        self._empty: set[int] = set()  # the positions of _EMPTY slots (looked at each build)
        self._index: dict[str, int] = {}  # name -> position
        self._list: list[DesiredService] = []
        self.rebuilt = 0  # whole builds (for tests)

    def build(
        self, services: Mapping[str, ServiceState], touched: Collection[str] | None = None
    ) -> list[DesiredService]:
        """What HAProxy should run: every HAProxy-enabled service and its servers (zone
        routed). A service whose selection did not change is the same object as before.

        ``touched``: the names whose ``desired`` was reset since the last build, as the
        caller knows them (the reconciler): only they are looked at, with the zone-routed
        and the empty slots, not every service (a scan of 200 services' states was ~3 %
        of the fleet's CPU per write, cache-cold). None: found by identity, every service."""
        if services is not self._services or len(services) != len(self._states):
            return self._build_all(services)
        if touched is None:
            now = list(map(_desired_of, self._states))
            redo = set(moved(now, self._made))
        else:
            index = self._index
            redo = {index[name] for name in touched if name in index}
            redo.update(self._empty)
        redo.update(self._live)
        for i in sorted(redo):
            made = self._made_for(self._names[i], self._states[i])
            live = i in self._live
            if made is self._made[i] and not live:
                continue
            if _zone_routed(made) != live:  # (its generator settings changed that)
                return self._build_all(services)
            result = self._route(made) if isinstance(made, DesiredService) else []
            start, length = self._slots[i]
            if len(result) != length:
                return self._build_all(services)
            self._list[start : start + length] = result
            self._made[i] = made
            if made is _EMPTY:
                self._empty.add(i)
            else:
                self._empty.discard(i)
        return list(self._list)

    def _build_all(self, services: Mapping[str, ServiceState]) -> list[DesiredService]:
        self.rebuilt += 1
        self._services = None  # (a router that raises below leaves no half-built list)
        made_all: list[DesiredService | _Empty] = []
        slots: list[tuple[int, int]] = []
        live: set[int] = set()
        built: list[DesiredService] = []
        for i, (name, state) in enumerate(services.items()):
            made = self._made_for(name, state)
            result = self._route(made) if isinstance(made, DesiredService) else []
            if _zone_routed(made):
                live.add(i)
            made_all.append(made)
            slots.append((len(built), len(result)))
            built += result
        self._states, self._names = list(services.values()), list(services)
        self._made, self._slots, self._live, self._list = made_all, slots, live, built
        self._index = {name: i for i, name in enumerate(self._names)}
        self._empty = {i for i, made in enumerate(made_all) if made is _EMPTY}
        self._services = services
        return list(built)

    @staticmethod
    def _made_for(name: str, state: ServiceState) -> DesiredService | _Empty:
        """The service's DesiredService, built when its selection or config changed."""
        if state.desired is not None:
            return state.desired
        if state.selection is None or state.config.haproxy.disabled:
            return _EMPTY
        made = state.desired = DesiredService(name, state.config, list(state.selection.servers))
        return made


def _zone_routed(made: DesiredService | _Empty) -> bool:
    return isinstance(made, DesiredService) and made.config.zone_routing is not None
