"""A restart while a SIGHUP's typo was held (synapse.watcher_swap): the saved servers stay.

The state file records, per service, a key of the discovery its servers came from
(``discovery_key``: a digest of the settings of the watcher that listed them, label_filters
included), under the reserved ``_synapse`` entry as ``discovery`` (older synapses ignore
it; a file without it is read as before: nothing held). A SIGHUP whose new discovery lists
no server keeps the old watcher, whose lists the file goes on saving; a restart then starts
from the typo alone, and the file alone knows the servers that were served. So at a start,
a service whose recorded key is not its config's, while that discovery gives it no server
(nothing listed, or every record dropped by its label_filters), serves the file's servers
as they were served (the file holds the selected servers: taken unfiltered), whatever
``use_previous_backends`` says; /health lists it under ``degraded`` and it is logged once
(``restart_discovery_held``). The first list with a server ends it. Nothing refreshes the
file's servers meanwhile: they age out in ``state_file_ttl`` (no old watcher exists).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Container, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from smartstack.logs import event
from synapse.config import RegistryServerOptions, ServiceConfig
from synapse.selection import ORIGIN_STATE_FILE, Selection, no_server_reason, select_servers

if TYPE_CHECKING:
    from synapse.model import Report
    from synapse.state_cache import StateCache

log = logging.getLogger("synapse.restart_held")

KEYS_ENTRY = "discovery"  # in the reserved entry: {"timestamp": ..., "services": {name: key}}
KeyOf = Callable[[str], "str | None"]  # a service -> the key of the watcher now listing it


class Listed(Protocol):
    """A reconciler's service (synapse.reload_diff): its config and latest report."""

    config: ServiceConfig
    report: Report | None


def _plain(value: Any) -> Any:
    """A config value as JSON-able data, on either model base (fields left None skipped:
    a release that adds an optional setting does not change every key)."""
    fields = getattr(type(value), "model_fields", None)
    if fields is not None:
        items = {n: getattr(value, n) for n in fields}
        items.update(getattr(value, "model_extra", None) or {})
        return {k: _plain(v) for k, v in sorted(items.items()) if v is not None}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in sorted(value.items())}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value if isinstance(value, str | int | float | bool) else str(value)


def discovery_key(discovery: Any) -> str:
    """A short digest of a service's discovery settings (label_filters included)."""
    text = json.dumps(_plain(discovery), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def read_keys(own: Any) -> dict[str, str]:
    """The recorded keys of the file's reserved entry ({}: a file without them)."""
    entry = own.get(KEYS_ENTRY) if isinstance(own, Mapping) else None
    services = entry.get("services") if isinstance(entry, Mapping) else None
    if not isinstance(services, Mapping):
        return {}
    return {str(s): k for s, k in services.items() if isinstance(k, str)}


def written_keys(
    keys: Mapping[str, str | None], services: Mapping[str, Any], now: float
) -> dict[str, Any]:
    """The reserved entry's ``discovery`` for the services written ({}: none known). Shaped
    as an entry with a ``timestamp``, as the reserved entry's others (the Airbnb format)."""
    kept = {s: keys[s] for s in sorted(services) if keys.get(s) is not None}
    return {KEYS_ENTRY: {"timestamp": int(now), "services": kept}} if kept else {}


class RestartHeld:
    """The services served from the state file because their discovery changed since the
    run that saved it and lists no server yet."""

    def __init__(self) -> None:
        self._seen: set[str] = set()  # services looked at (each once, at its first select)
        self._candidates: set[str] = set()  # recorded key not the config's: may be held
        self.held: dict[str, int] = {}  # service -> the saved servers served

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
            if recorded is not None and recorded != discovery_key(config.discovery):
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
        return selection

    def _end(self, name: str, why: str) -> None:
        self._candidates.discard(name)
        if self.held.pop(name, None) is not None:
            event(log, "restart_discovery_held_ended", service=name, reason=why)

    def degraded(self, configured: Container[str]) -> list[str]:
        """For /health: the held services still ``configured`` (a SIGHUP may drop one)."""
        return [f"{name}: the discovery changed since the last run and lists no servers; "
                f"serving the {count} servers the previous run saved"
                for name, count in sorted(self.held.items()) if name in configured]  # fmt: skip
