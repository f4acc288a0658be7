"""The state file's read side: its load, and what it holds per service (``StateFileView``)."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from smartstack.boot_clock import boot_id, boottime, wall_offset
from smartstack.logs import event
from smartstack.record import InvalidRecord, registration_from_dict
from synapse import state_clock
from synapse.atomic import read_text
from synapse.config import RegistryServerOptions, ServiceConfig
from synapse.model import Found
from synapse.restart_held import KeyOf, Recorded, read_keys
from synapse.selection import ORIGIN_STATE_FILE, Selection, select_servers
from synapse.state_clock import is_stamp
from synapse.state_entries import (
    GENERATOR_KEY,
    Left,
    bounded,
    departed,
    encode,
    entry_name,
    line_of,
    parse_line,
)
from synapse.write_streak import WriteStreak
from synapse.zone_state import Evacuations

log = logging.getLogger("synapse.state_cache")  # (the state file's events: one logger)

RESERVED_SERVICE = "_synapse"  # not a service: synapse's own state
EVACUATIONS_KEY = "zone_evacuations"


class StateFileView:
    """The state file, held as one JSON text per service (what the file holds): 20,000
    servers cost ~2.5 MB this way rather than ~11 MB of dicts, and a service that did not
    change is neither rebuilt nor encoded again. A service's entries are parsed back only
    when asked for (a start, a service without a report, a rebuild); its servers marked
    left are held apart (``Left``) and joined to its line only when the file is written."""

    def __init__(
        self,
        path: str | Path,
        ttl: float,
        clock: Callable[[], float] = time.time,
        boot: Callable[[], float] | None = None,
        boot_of: Callable[[], str | None] = boot_id,
        key_of: KeyOf | None = None,
    ) -> None:
        self.path = Path(path)
        # service -> key of the discovery that listed its servers (``key_of``: restart_held)
        self._keys: dict[str, Recorded | None] = {}
        self._key_of = key_of
        self.ttl = ttl
        if boot is None:  # (a wall clock injected alone is one that never steps)
            boot = boottime if clock is time.time else clock
        self.clock, self._boot, self._boot_id = clock, boot, boot_of  # (synapse.state_clock)
        # Services whose stamps are another boot's wall clock (not ours: a step of ours
        # does not move them), until rebuilt from discovery.
        self._foreign: set[str] = set()
        # The wall clock's lead over boottime the stamps held here are on (set at the load
        # and whenever a step is caught up with, under the write lock): a step is applied
        # to them once, whichever of an update, the watcher or a reload sees it first.
        self._offset = wall_offset(clock(), boot())
        # service -> (its text, its newest stamp): what the clock record vouches for, and
        # what lets ``cached`` answer None without parsing a service that is all too old.
        self._stamps: dict[str, tuple[str, float | None]] = {}
        self._warned: dict[str, str] = {}  # service -> the text whose bad entries were logged
        self._texts: dict[str, str] = {}  # service -> "name": {its servers} (none left)
        self._left: dict[str, Left] = {}  # service -> its servers marked left
        self._generators: dict[str, dict[str, Any]] = {}  # service -> its GENERATOR_KEY
        self._built: dict[str, Selection] = {}  # service -> the selection its text came from
        self._written_at: float | None = None
        self.pending = False  # the last update left services for the next one (budget)
        self.last_error: str | None = None
        # Failed writes, said once a streak (a full disk fails each retry the same way);
        # while ``failing`` every update writes the file again (round_outputs: each second).
        self.write_streak = WriteStreak(log, "state_file_write_failed",
                                        "state_file_write_recovered", str(self.path))  # fmt: skip
        # An update's write failed and no update's write succeeded since: the file lacks
        # servers the cache does not hold either (an evacuation's write, of the servers last
        # written, succeeding meanwhile ends nothing: the streak and the retries go on).
        self.behind = False
        self.evacuations = Evacuations()
        # The evacuations changed and no write has kept them yet (a full or read-only disk):
        # every later update writes the file, so they are kept once the disk is back.
        self.evacuations_unsaved = False
        # Writes run in threads (the reconciler's update, the zone API's evacuations): one
        # at a time, each with the evacuations current when it writes, or an update that
        # read the old ones could land last and put them back.
        self._write_lock = threading.RLock()
        # Managed: the config file HAProxy runs was written by something else after this
        # synapse's last write (an older synapse, after a rollback: it never updates this
        # file): merged with what the adopted HAProxy runs (adopted_servers).
        self.behind_haproxy = False

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
        services = {str(service): {str(k): v for k, v in servers.items() if isinstance(v, dict)}
                    for service, servers in doc.items() if isinstance(servers, dict)}  # fmt: skip
        # (the stamps' ages made true against a step of the wall clock: synapse.state_clock)
        now, boot = self.clock(), (self._boot(), self._boot_id())
        with self._write_lock:
            services, self._foreign, step = state_clock.as_read(own, services, now, *boot)
            for service, servers in services.items():
                self._keep(service, servers)
            self._offset = wall_offset(now, boot[0])  # (what the stamps are on now)
            self._keys = {s: k for s, k in read_keys(own).items() if s in self._texts}
        if step:
            event(log, "state_file_clock_stepped", path=str(self.path), step_s=round(step, 1),
                  effect="the stamps the record vouches for moved by the step")  # fmt: skip
        if isinstance(own, dict) and EVACUATIONS_KEY in own:
            try:
                self.evacuations = Evacuations.from_json(own[EVACUATIONS_KEY])
            except ValueError as exc:
                event(log, "state_file_bad_evacuations", level=logging.WARNING,
                      path=str(self.path), reason=str(exc)[:200], effect="none kept")  # fmt: skip
        event(log, "state_file_loaded", path=str(self.path), services=len(self._texts))

    def entries(self, service: str) -> dict[str, dict[str, Any]]:
        """``service``'s entries as the file has them, those marked left too."""
        line = self._texts.get(service)
        return (
            parse_line(service, line_of(line, self._left.get(service))) if line is not None else {}
        )

    def _servers(self, service: str) -> dict[str, dict[str, Any]]:
        """``service``'s entries but those marked left: what an update compares."""
        line = self._texts.get(service)
        return parse_line(service, line) if line is not None else {}

    def cached(self, service: str) -> list[Found] | None:
        """Servers of ``service`` seen within the TTL, or None when the cache has none.
        (Asked every round for a silent service serving nothing: one all too old is not
        parsed, and a bad entry is logged once per text of its service.)"""
        cutoff = self.clock() - self.ttl
        line = self._texts.get(service)
        stamp = self._newest(service, line) if line is not None else None
        if stamp is None or stamp < cutoff:
            return None
        quiet, bad = self._warned.get(service) is line, False
        found: list[Found] = []
        for key, data in sorted(self._servers(service).items()):
            if key == GENERATOR_KEY:
                continue
            stamp = data.get("timestamp")
            if not is_stamp(stamp) or stamp < cutoff or data.get("left"):
                continue  # too old, or a server that had left when the file was written
            try:
                registration = registration_from_dict(data, fallback_name=entry_name(key))
            except InvalidRecord as exc:
                bad = True
                if not quiet:
                    event(log, "state_file_bad_entry", level=logging.WARNING, service=service,
                          server=key[:100], reason=exc.reason)  # fmt: skip
                continue
            sequence = data.get("id")  # kept for leader_election (selection.py)
            if not isinstance(sequence, int) or isinstance(sequence, bool):
                sequence = None
            found.append(Found(registration, f"state_file:{key}", sequence))
        if bad and line is not None:
            self._warned[service] = line
        return found or None

    def _forget_unwritten(self) -> None:
        """The per-service memos of services the file no longer has (removed by a SIGHUP,
        or without servers): kept, every service name ever configured stayed in them."""
        self._keys = {s: k for s, k in self._keys.items() if s in self._texts}
        self._stamps = {s: m for s, m in self._stamps.items() if s in self._texts}
        self._warned = {s: t for s, t in self._warned.items() if s in self._texts}

    def _newest(self, service: str, line: str) -> float | None:
        """The newest stamp of ``service``'s servers (``line``: its text), parsed once a text."""
        memo = self._stamps.get(service)
        if memo is None or memo[0] is not line:
            memo = (line, state_clock.newest(parse_line(service, line)))
            self._stamps[service] = memo
        return memo[1]

    def _encoded(
        self, service: str, servers: Mapping[str, Any], generator: Mapping[str, Any] | None
    ) -> str:
        """``_encode``, its newest stamp kept (``_newest``) while the servers are at hand."""
        text = encode(service, servers, generator)
        self._stamps[service] = (text, state_clock.newest(servers))
        return text

    def selection(
        self, service: str, config: ServiceConfig, policy: RegistryServerOptions | None
    ) -> Selection:
        """``service``'s servers here as a restarted synapse's "previous list", for
        ``use_previous_backends``: the servers HAProxy ran, not nothing. Its first report
        may be empty (a registry glitch, a path not there yet): that must not empty it."""
        return select_servers(config, self.cached(service), None, policy, ORIGIN_STATE_FILE)

    def discovery_key(self, service: str) -> Recorded | None:
        """The record of the discovery its servers came from (restart_held; None: unknown)."""
        return self._keys.get(service)

    def generator(self, service: str) -> dict[str, Any]:
        """The generator settings the registry last gave ``service`` ({}: none)."""
        found = self._generators.get(service)
        return {k: v for k, v in found.items() if isinstance(v, dict)} if found else {}

    def _keep(self, service: str, servers: Mapping[str, Any]) -> None:
        """A service as the file had it: its servers marked left apart, bounded already
        (a file an older synapse wrote may hold a day of departures)."""
        found = servers.get(GENERATOR_KEY)
        if isinstance(found, dict):
            self._generators[service] = found
        current = {k: v for k, v in servers.items() if k == GENERATOR_KEY or not v.get("left")}
        left = departed(servers, current)  # (those marked left: not among ``current``)
        self._left[service] = bounded(left, current, self.clock() - self.ttl)
        self._texts[service] = self._encoded(service, current, None)

    def _fail(self, name: str, reason: str) -> None:
        self.last_error = reason
        event(log, name, level=logging.WARNING, path=str(self.path), reason=reason[:200])
