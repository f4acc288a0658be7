"""Maintenance flags that survive a restart: one small JSON file per service in ``state_dir``.

Like hacheck's spool directory: ``nerve maint web`` writes ``<state_dir>/web.json``,
``nerve up web`` removes it, and a nerve that starts finds the flag and keeps the
service withdrawn. A flag may carry an expiry (``--for 10m``). A flag that nerve cannot
read for want of its own file descriptors or memory is ``UNKNOWN`` for now, never taken
as an order (a flag file that is there but unreadable otherwise is one). A second
``nerve maint`` joins the flag in force (``MaintenanceFlag.joined``); ``nerve up`` ends it
for everyone.
"""

from __future__ import annotations

import enum
import json
import logging
import os
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from nerve.own_limits import at_own_limit
from smartstack.logs import event

log = logging.getLogger("nerve.maintenance")


class Unknown(enum.Enum):
    UNKNOWN = "unknown"


UNKNOWN = Unknown.UNKNOWN  # load(): try again later, keep what you had
JOIN = " | "  # between the reasons of maintenances entered on top of each other
MAX_JOINED = 2000  # characters of joined reasons (one reason is at most 500)


@dataclass(frozen=True)
class MaintenanceFlag:
    reason: str
    since: float  # unix time
    until: float | None = None  # unix time; None = until `nerve up`
    unreadable: bool = False  # the stand-in for a flag file nerve could not read (no end)

    def expired(self, now: float) -> bool:
        return self.until is not None and now >= self.until

    def joined(self, reason: str, until: float | None) -> MaintenanceFlag:
        """This flag with a second operator's maintenance added: both reasons, the later
        end (no end stays no end). Two operators' `nerve maint` on one service must not
        let the second's shorter ``--for`` register an instance the first is repairing."""
        parts = self.reason.split(JOIN)
        if reason not in parts:
            parts.append(reason)
            if len(JOIN.join(parts)) > MAX_JOINED:  # a script's reasons piling up
                parts = [parts[0], "...", reason]
        later = None if self.until is None or until is None else max(self.until, until)
        return MaintenanceFlag(JOIN.join(parts), self.since, later)

    def to_json(self) -> dict[str, Any]:
        return {"reason": self.reason, "since": self.since, "until": self.until}


class MaintenanceStore:
    """Flag files in ``directory``; without a directory, flags live in memory only."""

    def __init__(self, directory: str | os.PathLike[str] | None) -> None:
        self.directory = Path(directory) if directory else None
        self._memory: dict[str, MaintenanceFlag] = {}
        self._unknown: set[str] = set()  # services whose last read was UNKNOWN (logged once)

    def _file(self, service: str) -> Path:
        assert self.directory is not None
        # Service names come from config keys: quote them into a safe file name.
        return self.directory / f"{urllib.parse.quote(service, safe='')}.json"

    def load(self, service: str) -> MaintenanceFlag | Literal[Unknown.UNKNOWN] | None:
        """The service's flag, None without one, UNKNOWN while nerve cannot open files."""
        if service in self._memory:
            return self._memory[service]
        if self.directory is None:
            return None
        path = self._file(service)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            flag = MaintenanceFlag(
                reason=str(raw["reason"]),
                since=float(raw.get("since", 0.0)),
                until=None if raw.get("until") is None else float(raw["until"]),
            )
        except FileNotFoundError:
            self._unknown.discard(service)
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            if at_own_limit(exc):
                self._note_unknown(service, path, exc)
                return UNKNOWN  # not cached: the next read may well succeed
            # An unreadable flag still means someone wanted the service out: stay out.
            event(
                log,
                "maintenance_flag_unreadable",
                level=logging.WARNING,
                file=str(path),
                error=str(exc)[:160],
            )
            reason = f"unreadable flag file {path}"
            flag = MaintenanceFlag(reason=reason, since=time.time(), unreadable=True)
        self._unknown.discard(service)
        self._memory[service] = flag
        return flag

    def _note_unknown(self, service: str, path: Path, exc: OSError) -> None:
        if service in self._unknown:
            return  # once per streak: at the open-file limit every round may hit this
        self._unknown.add(service)
        detail = "nerve is out of resources: read again next round"
        event(log, "maintenance_flag_unknown", logging.WARNING, service=service,
              file=str(path), error=str(exc)[:160], detail=detail)  # fmt: skip

    def save(self, service: str, flag: MaintenanceFlag) -> None:
        self._memory[service] = flag
        if self.directory is None:
            return
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            path = self._file(service)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(flag.to_json()) + "\n", encoding="utf-8")
            tmp.replace(path)  # atomic: a crash never leaves half a flag
        except OSError as exc:
            _warn("maintenance_flag_not_saved", service, exc, "the flag holds until nerve restarts")

    def clear(self, service: str) -> None:
        self._memory.pop(service, None)
        if self.directory is None:
            return
        try:
            self._file(service).unlink(missing_ok=True)
        except OSError as exc:
            _warn("maintenance_flag_not_removed", service, exc, "remove the file by hand")


def _warn(what: str, service: str, exc: OSError, detail: str) -> None:
    event(log, what, logging.WARNING, service=service, error=str(exc)[:160], detail=detail)
