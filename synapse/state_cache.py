"""Airbnb's ``state_file_path`` / ``state_file_ttl``: a cache of recently seen servers.

The file maps service -> HAProxy server name -> the backend record plus the unix
``timestamp`` it was last seen, the format of Airbnb synapse's state file:

    {"web": {"10.0.0.5:8080_web-1": {"timestamp": 1700000000, "host": "10.0.0.5",
                                     "port": 8080, "name": "web-1"}}}

Servers that left stay in the file, marked ``"left": true``, until they were last seen
more than ``state_file_ttl`` ago (Ruby keeps every backend seen within the TTL); they are
never served from it. It is rewritten atomically whenever a service's discovered servers change (and
refreshed well within the TTL while nothing changes). A synapse that starts while
its registry is unreachable configures HAProxy from the entries younger than the
TTL instead of starting empty. Entries are validated on load like any record.

Runtime zone evacuations are kept in the same file, under a reserved service key
shaped like any other entry (so the Airbnb format stays intact; they never expire):

    {"_synapse": {"zone_evacuations": {"timestamp": 1700000000,
                                       "global": ["az2"], "services": {"web": ["az3"]}}}}
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from smartstack.logs import event
from smartstack.record import InvalidRecord, registration_from_dict
from synapse.atomic import read_text, write_atomic
from synapse.model import Found
from synapse.selection import ORIGIN_DISCOVERY, Selection
from synapse.zone_state import Evacuations

log = logging.getLogger("synapse.state_cache")

Entries = dict[str, dict[str, dict[str, Any]]]

RESERVED_SERVICE = "_synapse"  # not a service: synapse's own state
EVACUATIONS_KEY = "zone_evacuations"
# Ruby's key, beside the servers of a service: the generator settings the registry gave
# (synapse/generator_config.py), so a restart during a registry outage keeps them.
GENERATOR_KEY = "watcher_config_for_generator"


class StateCache:
    def __init__(self, path: str | Path, ttl: float, clock: Callable[[], float] = time.time):
        self.path = Path(path)
        self.ttl = ttl
        self.clock = clock
        self._entries: Entries = {}
        self._written_at: float | None = None
        self.last_error: str | None = None
        self.evacuations = Evacuations()

    # --- reading -------------------------------------------------------------------

    def load(self) -> None:
        """Read the file if there is one; a broken file is logged and ignored."""
        text = read_text(self.path)
        if text is None:
            return
        try:
            doc = json.loads(text)
        except ValueError as exc:
            self._fail("state_file_unreadable", f"not JSON: {exc}")
            return
        if not isinstance(doc, dict):
            self._fail("state_file_unreadable", "top level is not an object")
            return
        own = doc.pop(RESERVED_SERVICE, None)
        self._entries = {
            str(service): {str(k): v for k, v in servers.items() if isinstance(v, dict)}
            for service, servers in doc.items()
            if isinstance(servers, dict)
        }
        if isinstance(own, dict) and EVACUATIONS_KEY in own:
            try:
                self.evacuations = Evacuations.from_json(own[EVACUATIONS_KEY])
            except ValueError as exc:
                event(log, "state_file_bad_evacuations", level=logging.WARNING,
                      path=str(self.path), reason=str(exc)[:200], effect="none kept")  # fmt: skip
        event(log, "state_file_loaded", path=str(self.path), services=len(self._entries))

    def cached(self, service: str) -> list[Found] | None:
        """Servers of ``service`` seen within the TTL, or None when the cache has none."""
        cutoff = self.clock() - self.ttl
        found: list[Found] = []
        for key, data in sorted(self._entries.get(service, {}).items()):
            if key == GENERATOR_KEY:
                continue
            stamp = data.get("timestamp")
            if not _is_stamp(stamp) or stamp < cutoff or data.get("left"):
                continue  # too old, or a server that had left when the file was written
            try:
                registration = registration_from_dict(data, fallback_name=None)
            except InvalidRecord as exc:
                event(log, "state_file_bad_entry", level=logging.WARNING, service=service,
                      server=key[:100], reason=exc.reason)  # fmt: skip
                continue
            sequence = data.get("id")  # kept for leader_election (selection.py)
            if not isinstance(sequence, int) or isinstance(sequence, bool):
                sequence = None
            found.append(Found(registration, f"state_file:{key}", sequence))
        return found or None

    def generator(self, service: str) -> dict[str, Any]:
        """The generator settings the registry last gave ``service`` ({}: none)."""
        found = self._entries.get(service, {}).get(GENERATOR_KEY)
        return {k: v for k, v in found.items() if isinstance(v, dict)} if found else {}

    # --- writing -------------------------------------------------------------------

    def update(
        self,
        selections: Mapping[str, Selection],
        services: Iterable[str],
        generators: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> bool:
        """Record the currently discovered servers; write the file if anything changed.

        Only servers that came from discovery are cached (not defaults, not a kept
        previous list). Services no longer configured are dropped. Returns True when
        the file was written.
        """
        now = self.clock()
        entries: Entries = {}
        configured = set(services)
        for service, old in self._entries.items():
            if service in configured:
                entries[service] = old
        for service, selection in selections.items():
            # a service named like the reserved key is not cached (it would clobber it)
            if selection.origin != ORIGIN_DISCOVERY or service == RESERVED_SERVICE:
                continue
            current = {
                server.name: {"timestamp": int(now), **record}
                for server, record in zip(selection.servers, selection.records, strict=True)
                if server.origin != "default"
            }
            entries[service] = {**self._left(service, current, now), **current}
        if generators is not None:
            for service in configured:
                found = generators.get(service)
                servers = {k: v for k, v in entries.get(service, {}).items() if k != GENERATOR_KEY}
                if found:
                    servers[GENERATOR_KEY] = dict(found)
                if servers or service in entries:
                    entries[service] = servers
        stale = self._written_at is None or now - self._written_at > self.ttl / 4
        if _without_stamps(entries) == _without_stamps(self._entries) and not stale:
            return False
        return self._write(entries, now)

    def _left(self, service: str, current: Mapping[str, Any], now: float) -> Entries:
        """Servers of ``service`` that left, kept (marked ``left``) while seen within the TTL:
        Ruby's state file keeps every backend seen within ``state_file_ttl``."""
        kept: dict[str, dict[str, Any]] = {}
        for key, data in self._entries.get(service, {}).items():
            stamp = data.get("timestamp")
            if key == GENERATOR_KEY or key in current:
                continue
            if not _is_stamp(stamp) or stamp < now - self.ttl:
                continue
            kept[key] = {**data, "left": True}
        return kept  # type: ignore[return-value]

    def refresh(
        self,
        selections: Mapping[str, Selection],
        services: Iterable[str],
        generators: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> bool:
        """Called periodically: rewrites the file once a quarter of the TTL has passed."""
        return self.update(selections, services, generators)

    def save_evacuations(self, evacuations: Evacuations) -> bool:
        """Keep the runtime zone evacuations across a restart: the file is written now."""
        self.evacuations = evacuations
        return self._write(self._entries, self.clock())

    def _write(self, entries: Entries, now: float) -> bool:
        doc: dict[str, Any] = dict(entries)
        if self.evacuations != Evacuations():  # none: the file stays in Airbnb's plain form
            own = {"timestamp": int(now), **self.evacuations.to_json()}
            doc[RESERVED_SERVICE] = {EVACUATIONS_KEY: own}
        try:
            write_atomic(self.path, json.dumps(doc, indent=2, sort_keys=True) + "\n")
        except OSError as exc:
            self._fail("state_file_write_failed", str(exc))
            return False
        self._entries = entries
        self._written_at = now
        self.last_error = None
        return True

    def _fail(self, name: str, reason: str) -> None:
        self.last_error = reason
        event(log, name, level=logging.WARNING, path=str(self.path), reason=reason[:200])


def _is_stamp(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _strip(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k != "timestamp"}


def _without_stamps(entries: Entries) -> dict[str, dict[str, dict[str, Any]]]:
    return {s: {k: _strip(v) for k, v in servers.items()} for s, servers in entries.items()}
