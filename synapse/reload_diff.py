"""The reconciler's per-service state, and a reloaded config (SIGHUP) laid over it.

A SIGHUP must cost what changed, not the size of the fleet: an edge with 500 services
whose one service gained a host must not select, hand over and render 500 services.
``carry_over`` keeps the state of every service whose config is unchanged, down to its
DesiredService object, which the HAProxy side skips by identity. The config cache
(``synapse.config_cache``) hands back the very same ServiceConfig object for a service
whose part of the file did not change, so "unchanged" is mostly an identity check; an
equal but distinct object (a config not loaded through the cache) counts as unchanged too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from smartstack.modelbase import same_model  # also which fields were given, not only ==
from synapse.config import ServiceConfig, SynapseConfig
from synapse.haproxy.routes import route_keys
from synapse.model import DesiredService, Found, Report
from synapse.selection import HELD_ORIGIN, Selection, selection_found

DEFAULT_STATE_FILE_TTL = 86400.0  # HAProxyConfig.state_file_ttl's default (no haproxy block)


@dataclass
class ServiceState:
    config: ServiceConfig  # the file's, with the registry's generator settings under it
    file_config: ServiceConfig
    generator: Mapping[str, Any] = field(default_factory=dict)  # the registry's settings
    report: Report | None = None
    selection: Selection | None = None
    reported_options: tuple[str, ...] = ()  # the last logged (synapse.options_report)
    reported_ignored: tuple[str, ...] = ()
    reported_unmatched: bool = False  # label_filters_match_nothing said (options_report)
    desired: DesiredService | None = None  # built from selection; None when it changed
    held: Hold | None = None  # what partial reports keep (``Holds``)


@dataclass
class Pending:
    """Changes seen since the last hand-over."""

    event_times: list[float] = field(default_factory=list)
    reasons: set[str] = field(default_factory=set)
    services: set[str] = field(default_factory=set)  # services to select again
    hand_over: bool = False  # hand over even when no selection changed (a config changed)

    def merge(self, later: Pending) -> None:
        self.event_times.extend(later.event_times)
        self.reasons |= later.reasons
        self.services |= later.services
        self.hand_over |= later.hand_over


@dataclass
class Hold:
    """What a service's partial reports keep (``Holds``)."""

    found: dict[tuple[str, int, str | None], Found]  # by (host, port, name); HELD_ORIGIN
    timer: asyncio.TimerHandle | None = None  # ends it: none is kept after it


class Holds:
    """A partial report (a ``multi`` union child has not answered yet) keeps the servers
    the service had at the first one (its selection, else ``cached``: the state file's)
    beside its own, as they may be the silent child's: until a complete report, or for
    ``bound()`` seconds (state_file_ttl) from the first partial report, after which the
    state file would not start from them either. A kept server that a report lists is an
    answered child's: it goes as soon as that child no longer lists it. Kept servers have
    the origin HELD_ORIGIN + theirs, so the state file does not stamp them as seen."""

    def __init__(self, due: Callable[[str], None], bound: Callable[[], float]) -> None:
        self._due = due  # called when a hold ends on its own (a round selects it again)
        self._bound = bound

    def found(
        self, service: ServiceState, cached: Callable[[str], Sequence[Found] | None]
    ) -> Sequence[Found]:
        """What a service's report found; a partial one with what its hold keeps after it."""
        report = service.report
        assert report is not None
        if not report.partial:
            self.end(service)
            return report.found
        hold = service.held
        if hold is None:
            selection = service.selection
            had = selection_found(selection) if selection is not None else cached(report.service)
            hold = service.held = Hold({_key(f): _held(f) for f in had or ()})
            loop = asyncio.get_running_loop()
            hold.timer = loop.call_later(self._bound(), self._expire, hold, report.service)
        if hold.found:
            for key in {_key(f) for f in report.found}.intersection(hold.found):
                del hold.found[key]  # an answered child's: its reports say
        return (*report.found, *hold.found.values())

    @staticmethod
    def end(service: ServiceState) -> None:
        hold, service.held = service.held, None
        if hold is not None and hold.timer is not None:
            hold.timer.cancel()

    def _expire(self, hold: Hold, name: str) -> None:
        hold.found.clear()  # (kept as it is: a later partial report holds nothing anew)
        self._due(name)


def _key(found: Found) -> tuple[str, int, str | None]:
    reg = found.registration
    return reg.host, reg.port, reg.name


def _held(found: Found) -> Found:
    if found.origin.startswith(HELD_ORIGIN):
        return found
    return found._replace(origin=HELD_ORIGIN + found.origin)


def hold_bound(config: SynapseConfig) -> float:
    """How long a partial report keeps a silent child's servers (``Holds``)."""
    return config.haproxy.state_file_ttl if config.haproxy else DEFAULT_STATE_FILE_TTL


def policy_changed(old: SynapseConfig, new: SynapseConfig) -> bool:
    """Whether the settings every service's selection depends on changed."""
    before = old.haproxy.registry_server_options if old.haproxy else None
    after = new.haproxy.registry_server_options if new.haproxy else None
    return before != after


@dataclass
class CarriedOver:
    services: dict[str, ServiceState]
    changed: list[str]  # new services and services whose config changed
    regenerate: dict[str, Mapping[str, Any]]  # changed, same discovery: generator to re-apply


def carry_over(old: Mapping[str, ServiceState], config: SynapseConfig) -> CarriedOver:
    """The reconciler's services for a reloaded ``config``: an unchanged service keeps its
    state object; a changed one starts from its new config with what its watcher reported
    (when its discovery is the same) and its last selection; a removed one is dropped. A
    new service with the discovery of a removed one is that one renamed: it starts from the
    removed one's report and selection, not empty (its own watcher reports soon after)."""
    result = CarriedOver({}, [], {})
    gone = [state for name, state in old.items() if name not in config.services]
    for name, cfg in config.services.items():
        kept = old.get(name)
        if kept is not None and same_model(kept.file_config, cfg):
            result.services[name] = kept
            continue
        renamed = kept is None
        if renamed:  # what the old name's watcher knew, until the new name's own reports
            alike = [s for s in gone if same_model(s.config.discovery, cfg.discovery)]
            kept = alike[0] if len(alike) == 1 else None  # (two alike: which one is unknown)
        same_discovery = kept is not None and same_model(kept.config.discovery, cfg.discovery)
        # with the registry's settings: the kept config until they are merged anew (on plain
        # models a child checks them: synapse.generator_checks), not the file's alone
        regenerated = kept is not None and same_discovery and bool(kept.generator) and not renamed
        result.services[name] = ServiceState(
            kept.config if kept is not None and regenerated else cfg,
            cfg,
            report=kept.report if kept and same_discovery else None,
            selection=kept.selection if kept else None,
            held=kept.held if kept and same_discovery else None,  # (its bound runs on)
        )
        result.changed.append(name)
        if kept is not None and same_discovery:
            result.regenerate[name] = kept.generator
    return result


class Arrivals:
    """Services a SIGHUP added with nothing to start from (no report, no selection carried
    over, no default_servers): left out of the desired state until their first report or
    until ``startup_wait`` passed, as at a start (``holds``). Handed over at once, empty,
    their frontend was bound by the reload and answered 503 until the registry answered
    (restart_interval later for servers only a reload can add)."""

    def __init__(self, due: Callable[[str], None]) -> None:
        self._due = due  # called once a service's wait has passed (a round selects it)
        self._timers: dict[str, asyncio.TimerHandle] = {}

    def add(
        self,
        names: Collection[str],
        services: Mapping[str, ServiceState],
        wait: float,
        before: Mapping[str, ServiceState] | None = None,
    ) -> None:
        """``before``: the services before the SIGHUP. A new service taking a host or path
        one of them routed is not held: held out, its route would be nobody's (a 404)
        until its report; handed over empty, the route stays on the service that serves
        it until the new one has servers (``synapse.haproxy.route_sync.held``)."""
        loop = asyncio.get_running_loop()
        taken: set[tuple[str, str]] | None = None
        for name in names:
            state = services[name]
            if (
                state.report is None
                and state.selection is None
                and not state.config.default_servers
            ):
                self.drop(name)  # (removed and added again: the latest SIGHUP's wait)
                if before:
                    taken = _routed(before) if taken is None else taken
                    if not taken.isdisjoint(_route_keys(state.config)):
                        continue
                self._timers[name] = loop.call_later(wait, self._passed, name)

    def holds(self, name: str, found: Sequence[Found] | None) -> bool:
        """Whether a service without a report stays out of this round: it arrived by a
        SIGHUP, its wait has not passed and the state file (``found``) has nothing."""
        timer = self._timers.get(name)
        if timer is None or found or asyncio.get_running_loop().time() >= timer.when():
            self.drop(name)
            return False
        return True

    def drop(self, name: str) -> None:
        """``name`` reported (or left): it waits no longer."""
        timer = self._timers.pop(name, None)
        if timer is not None:
            timer.cancel()

    def _passed(self, name: str) -> None:
        if self._timers.pop(name, None) is not None:
            self._due(name)


def _route_keys(config: ServiceConfig) -> tuple[tuple[str, str], ...]:
    """The (map kind, key) pairs of a service's ``haproxy.routes`` (edge)."""
    hap = config.haproxy
    if not hap.routes or hap.disabled:
        return ()
    try:
        return route_keys(tuple(hap.routes.hosts), tuple(hap.routes.paths))
    except ValueError:  # (config loading refuses these first)
        return ()


def _routed(services: Mapping[str, ServiceState]) -> set[tuple[str, str]]:
    """The route keys of the services that were handed over (they have a selection)."""
    return {
        key for s in services.values() if s.selection is not None for key in _route_keys(s.config)
    }
