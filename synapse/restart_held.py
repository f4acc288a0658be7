"""A restart while a SIGHUP's typo was held (synapse.watcher_swap): the saved servers stay.

The state file records, per service, the key of the discovery its servers came from and,
while a SIGHUP's swap is held, the key of the discovery it is held for (``discovery_key``:
a digest of the settings that decide what is listed, label_filters included; no tuning,
no credential), under the reserved ``_synapse`` entry as ``discovery``: {name:
{"listing": key, "held_for": key}} (older synapses ignore it; a file without it, or with
the bare keys af3ea5c wrote, holds nothing). A SIGHUP whose new discovery lists no server
keeps the old watcher; a restart then starts from the typo alone, and the file alone
knows the servers that were served. So at a start, a service whose config's key is its
recorded ``held_for``, while that discovery gives it no server (nothing listed, or every
record dropped by its label_filters), serves the file's servers as they were served (the
file holds the selected servers: taken unfiltered), whatever ``use_previous_backends``
says; /health lists it under ``degraded`` and it is logged once
(``restart_discovery_held``). Any other change across a restart holds nothing (review
s27/cr4: a new path or a start_jitter while every instance was withdrawn served them on).
The first list with a server ends it, or the saved servers' age: nothing refreshes them
meanwhile (no old watcher exists), and at the newest one's ``state_file_ttl`` a timer
ends the hold (an empty path sends no report) and has the service selected again.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Callable, Container, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from smartstack.logs import event
from synapse import state_clock
from synapse.config import RegistryServerOptions, ServiceConfig
from synapse.selection import ORIGIN_STATE_FILE, Selection, no_server_reason, select_servers

if TYPE_CHECKING:
    from synapse.model import Report
    from synapse.state_cache import StateCache
    from synapse.watcher_swap import ServiceWatchers

log = logging.getLogger("synapse.restart_held")

KEYS_ENTRY = "discovery"  # in the reserved entry: {"timestamp": ..., "services": {name: record}}
LISTING, HELD_FOR = "listing", "held_for"  # a record: {"listing": key, "held_for": key}?
Recorded = dict[str, str]
KeyOf = Callable[[str], "Recorded | None"]  # a service -> the record of the watcher listing it
TTL_MARGIN = 0.5  # seconds past the TTL: the file's servers are then surely too old


class Listed(Protocol):
    """A reconciler's service (synapse.reload_diff): its config and latest report."""

    config: ServiceConfig
    report: Report | None


# The settings that decide what a discovery lists (an allow-list: tuning such as
# start_jitter or retry_policy, and credentials, stay out: a digest of a password in the
# state file could be tested offline, and a tuning change is no new discovery).
LISTING_FIELDS = ("method", "label_filters", "hosts", "path", "decode", "host", "port",
                  "endpoints", "servers", "nameserver", "image_name", "container_port",
                  "label_selector", "watchers", "resolver")  # fmt: skip


def _plain(value: Any, fields: tuple[str, ...] | None = None) -> Any:
    """A config value as JSON-able data, on either model base (fields left None skipped:
    a release that adds an optional setting does not change every key). ``fields``: the
    model's fields taken (all, extras included, when None)."""
    model_fields = getattr(type(value), "model_fields", None)
    if model_fields is not None:
        if fields is None:
            items = {n: getattr(value, n) for n in model_fields}
            items.update(getattr(value, "model_extra", None) or {})
        else:
            items = {n: getattr(value, n) for n in fields if n in model_fields}
        return {k: _plain(v, LISTING_FIELDS if k == "watchers" else None)
                for k, v in sorted(items.items()) if v is not None}  # fmt: skip
    if isinstance(value, Mapping):
        return {str(k): _plain(v, fields) for k, v in sorted(value.items())}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value if isinstance(value, str | int | float | bool) else str(value)


def discovery_key(discovery: Any) -> str:
    """A short digest of the settings that decide what a service's discovery lists
    (LISTING_FIELDS, label_filters included; a ``multi``'s children the same way)."""
    text = json.dumps(_plain(discovery, LISTING_FIELDS), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def read_keys(own: Any) -> dict[str, Recorded]:
    """The recorded keys of the file's reserved entry ({}: a file without them). af3ea5c
    wrote a bare digest of every setting: not a record here, so nothing is held."""
    entry = own.get(KEYS_ENTRY) if isinstance(own, Mapping) else None
    services = entry.get("services") if isinstance(entry, Mapping) else None
    if not isinstance(services, Mapping):
        return {}
    return {str(s): {k: v for k, v in r.items() if k in (LISTING, HELD_FOR) and isinstance(v, str)}
            for s, r in services.items() if isinstance(r, Mapping)
            and isinstance(r.get(LISTING), str)}  # fmt: skip


def _held_for(key_of: KeyOf | None) -> Callable[[str], str | None]:
    return getattr(key_of, "held_for", None) or (lambda _name: None)


def held_moved(key_of: KeyOf | None, keys: Mapping[str, Recorded | None], names: Any) -> bool:
    """Whether a SIGHUP swap of one of ``names`` is held for a discovery the file does not
    say yet (the file is then written, though its servers are the same)."""
    held_for = _held_for(key_of)
    return any((h := held_for(s)) is not None and (keys.get(s) or {}).get(HELD_FOR) != h
               for s in names)  # fmt: skip


def written_keys(
    keys: dict[str, Recorded | None],
    services: Mapping[str, Any],
    now: float,
    key_of: KeyOf | None = None,
) -> dict[str, Any]:
    """The reserved entry's ``discovery`` for the services written ({}: none known). Shaped
    as an entry with a ``timestamp``, as the reserved entry's others (the Airbnb format).
    A service whose SIGHUP swap is held now gets ``held_for`` (kept in ``keys``: until its
    servers are listed again, a restart still holding must say it on)."""
    held_for = _held_for(key_of)
    for name in services:
        record, held = keys.get(name), held_for(name)
        if record is not None and held is not None and record.get(HELD_FOR) != held:
            keys[name] = {**record, HELD_FOR: held}
    kept = {s: keys[s] for s in sorted(services) if keys.get(s) is not None}
    return {KEYS_ENTRY: {"timestamp": int(now), "services": kept}} if kept else {}


class ListingKeys:
    """The daemon's ``key_of``: the key of the watcher whose lists a service is served from
    (a held SIGHUP swap's: the old one), and of the discovery a held swap waits on.
    Asked in the state file writer's thread (reads only)."""

    def __init__(self, watchers: ServiceWatchers) -> None:
        self._watchers = watchers
        self._stopping: dict[str, Any] | None = None  # the held swaps when the stop began

    def stopping(self) -> None:
        """The daemon's stop takes the swaps out before the reconciler's last write: the
        held ones are said as they were when it began."""
        pending = list(self._watchers.pending)
        held = {n: self._watchers.held_discovery(n) for n in pending}
        self._stopping = {n: d for n, d in held.items() if d is not None}

    def __call__(self, name: str) -> Recorded | None:
        watcher = self._watchers.active.get(name)
        return {LISTING: discovery_key(watcher.discovery)} if watcher is not None else None

    def held_for(self, name: str) -> str | None:
        stopping = self._stopping
        discovery = self._watchers.held_discovery(name) if stopping is None else stopping.get(name)
        return discovery_key(discovery) if discovery is not None else None


class RestartHeld:
    """The services served from the state file because their discovery changed since the
    run that saved it and lists no server yet."""

    def __init__(self, due: Callable[[str], None] | None = None) -> None:
        self._seen: set[str] = set()  # services looked at (each once, at its first select)
        self._candidates: set[str] = set()  # recorded key not the config's: may be held
        self.held: dict[str, int] = {}  # service -> the saved servers served
        # a held service's end at its saved servers' state_file_ttl: an empty path sends
        # no report, so nothing else would look again (``due``: select it again)
        self._due = due
        self._timers: dict[str, asyncio.TimerHandle] = {}

    def select(
        self,
        name: str,
        service: Listed,
        chosen: Selection,
        cache: StateCache | None,
        policy: RegistryServerOptions | None,
    ) -> Selection:
        """``chosen``, or the state file's servers as they were served while ``name`` is held."""
        config, report = service.config, service.report
        if name not in self._seen:
            self._seen.add(name)
            recorded = cache.discovery_key(name) if cache is not None else None
            # only a restart while a SIGHUP's swap to this very discovery was held
            if recorded is not None and recorded.get(HELD_FOR) == discovery_key(config.discovery):
                self._candidates.add(name)
        if name not in self._candidates or cache is None:
            return chosen
        filters = report.filters if report is not None and report.filters is not None else None
        filters = config.discovery.label_filters if filters is None else filters
        if report is not None and no_server_reason(report.found, filters) is None:
            self._end(name, "the new discovery lists a server")
            return chosen
        saved = cache.cached(name)
        if not saved:  # (none, or all older than state_file_ttl)
            self._end(name, "the state file has no servers for it")
            return chosen
        if report is None and chosen.servers:
            return chosen  # (not heard from yet: the file's servers already, said by nothing)
        # The file holds the servers as they were selected: not filtered again.
        selection = select_servers(config, saved, None, policy, ORIGIN_STATE_FILE, ())
        if report is None:
            return selection  # (a legitimate change ends at its first list: not said)
        if name not in self.held:
            why = no_server_reason(report.found, filters)
            event(log, "restart_discovery_held", level=logging.ERROR, service=name,
                  servers=len(selection), reason=why)  # fmt: skip
        self.held[name] = len(selection)
        self._end_at_ttl(name, cache)
        return selection

    def retain(self, configured: Container[str]) -> None:
        """A SIGHUP removed services: forget them (kept, every name ever configured stayed
        in ``_seen``: soak s45). One added again later is looked at again, as new."""
        for name in [n for n in self._seen if n not in configured]:
            self._seen.discard(name)
            self._end(name, "the service left the config")

    def _end_at_ttl(self, name: str, cache: StateCache) -> None:
        """End the hold when the newest saved server is ``state_file_ttl`` old."""
        if name in self._timers:
            return
        entries = cache.entries(name)
        newest = state_clock.newest({k: v for k, v in entries.items() if not v.get("left")})
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # (no loop: a unit test's direct select)
            return
        delay = max(0.0, (newest or 0.0) + cache.ttl - cache.clock()) + TTL_MARGIN
        self._timers[name] = loop.call_later(delay, self._expired, name)

    def _expired(self, name: str) -> None:
        self._timers.pop(name, None)
        self._end(name, "the saved servers are older than state_file_ttl")
        if self._due is not None:
            self._due(name)  # (selected again under the config's rules)

    def _end(self, name: str, why: str) -> None:
        timer = self._timers.pop(name, None)
        if timer is not None:
            timer.cancel()
        self._candidates.discard(name)
        if self.held.pop(name, None) is not None:
            event(log, "restart_discovery_held_ended", service=name, reason=why)

    def degraded(self, configured: Container[str]) -> list[str]:
        """For /health: the held services still ``configured`` (a SIGHUP may drop one)."""
        return [f"{name}: the discovery changed since the last run and lists no servers; "
                f"serving the {count} servers the previous run saved"
                for name, count in sorted(self.held.items()) if name in configured]  # fmt: skip
