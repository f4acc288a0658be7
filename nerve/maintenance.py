"""Maintenance flags that survive a restart: one small JSON file per service in ``state_dir``.

Like hacheck's spool directory: ``nerve maint web`` writes ``<state_dir>/web.json``,
``nerve up web`` removes it, and a nerve that starts finds the flag and keeps the
service withdrawn. A flag may carry an expiry (``--for 10m``). A flag that nerve cannot
read for want of its own file descriptors or memory, or whose file nerve cannot tell is
there (``state_dir`` it may not search: EACCES), is ``UNKNOWN`` for now, never taken as an
order; a flag file that is there but unreadable is one (a stand-in flag, read again every
round until the file speaks). A second ``nerve maint`` joins the flag in force
(``MaintenanceFlag.joined``); ``nerve up`` ends it for everyone.

A flag is in force as soon as it is set or ended; its file may lag (a full or read-only
disk): written or removed again every round (``retry``) until it works, and an ended
flag's stale file is never read back meanwhile (``persist_error``: why the disk lags).

In Docker mode a container's service (``web@app1:80``) is bound to the container (``bind``):
its flag records the container's id, and a flag left by another container of the same name
(an earlier one, since removed and recreated) is dropped instead of withdrawing the new one;
so are the flags of a container that is destroyed (``drop_container``, nerve/docker_flags.py).
"""

from __future__ import annotations

import contextlib
import enum
import functools
import json
import logging
import os
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from nerve.own_limits import at_own_limit
from smartstack.boot_clock import boot_id, boottime
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
    container: str | None = None  # Docker mode: the id of the container it belongs to
    unreadable: bool = False  # the stand-in for a flag file nerve could not read (no end)
    # The end on the boot's own clock (CLOCK_BOOTTIME) and that boot's id: a restart in the
    # same boot times the flag on it, whatever the wall clock did (``MaintenanceEnd``).
    boot_id: str | None = None
    boot_until: float | None = None

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
        return MaintenanceFlag(JOIN.join(parts), self.since, later, self.container)

    def shown(self) -> dict[str, Any]:
        """What /status and the admin API say of it."""
        return {"reason": self.reason, "since": self.since, "until": self.until}

    def to_json(self) -> dict[str, Any]:
        out = self.shown()
        if self.container is not None:
            out["container"] = self.container
        if self.boot_id is not None and self.boot_until is not None:  # (older nerves: ignored)
            out["boot_id"], out["boot_until"] = self.boot_id, self.boot_until
        return out

    def on_boot(self, wall_now: float, boot_now: float, boot: str | None) -> MaintenanceFlag:
        """This flag with its end also on the boot's clock (none without an end or a boot id)."""
        if self.until is None or boot is None:
            return replace(self, boot_id=None, boot_until=None)
        return replace(self, boot_id=boot, boot_until=round(boot_now + self.until - wall_now, 3))


class MaintenanceEnd:
    """When the flag in force ends, on the monotonic clock. The flag keeps wall-clock times
    (they survive a restart), but a running nerve must not end a 30-minute maintenance at
    once because NTP stepped the clock an hour ahead, nor keep it an hour late: the time
    left is taken once per flag (never more than its whole length), then counted down on
    the monotonic clock. It is taken from the flag's end on the boot's clock when the flag
    was saved in this boot (a restart after a step: true), else from the wall clock (after
    a reboot, or a flag an older nerve saved: a step while nerve was down moves the end)."""

    def __init__(
        self, boot: Callable[[], float] = boottime, boot_of: Callable[[], str | None] = boot_id
    ) -> None:
        self._flag: tuple[float, float, float | None] | None = None  # the flag timed's ends
        self._ends_at = 0.0  # monotonic
        self._boot, self._boot_of = boot, boot_of

    def left(self, flag: MaintenanceFlag, monotonic_now: float, wall_now: float) -> float | None:
        """Seconds until ``flag`` ends (0: over), None when it has no end."""
        if flag.until is None:
            return None
        if self._flag != (flag.since, flag.until, flag.boot_until):  # new, or its end moved
            self._flag = (flag.since, flag.until, flag.boot_until)
            left = flag.until - wall_now
            boot = self._boot_of()
            if flag.boot_until is not None and boot is not None and flag.boot_id == boot:
                left = flag.boot_until - self._boot()  # (saved in this boot)
            left = min(left, flag.until - flag.since)
            self._ends_at = monotonic_now + max(0.0, left)
        return max(0.0, self._ends_at - monotonic_now)

    def saved(self, flag: MaintenanceFlag, wall_now: float) -> MaintenanceFlag:
        """``flag`` as it is saved: its end also on this boot's clock."""
        return flag.on_boot(wall_now, self._boot(), self._boot_of())

    def over(self, flag: MaintenanceFlag, monotonic_now: float, wall_now: float) -> bool:
        return self.left(flag, monotonic_now, wall_now) == 0.0


def _parse(text: str) -> MaintenanceFlag:
    raw = json.loads(text)
    container, boot, boot_until = raw.get("container"), raw.get("boot_id"), raw.get("boot_until")
    timed = isinstance(boot, str) and isinstance(boot_until, int | float)  # (else: wall only)
    return MaintenanceFlag(
        reason=str(raw["reason"]),
        since=float(raw.get("since", 0.0)),
        until=None if raw.get("until") is None else float(raw["until"]),
        container=None if container is None else str(container),
        boot_id=boot if timed else None,
        boot_until=float(boot_until) if timed else None,
    )


class MaintenanceStore:
    """Flag files in ``directory``; without a directory, flags live in memory only."""

    def __init__(self, directory: str | os.PathLike[str] | None) -> None:
        self.directory = Path(directory) if directory else None
        self._memory: dict[str, MaintenanceFlag] = {}
        self._unknown: set[str] = set()  # services whose last read was UNKNOWN (logged once)
        self._unreadable: dict[str, MaintenanceFlag] = {}  # stand-ins, until the file reads
        self._pending: dict[str, str] = {}  # service -> "save" / "remove": the file lags
        self._errors: dict[str, str] = {}  # service -> why its file did not follow (logged)
        self._owners: dict[str, str] = {}  # Docker mode: service name -> its container's id

    def _file(self, service: str) -> Path:
        assert self.directory is not None
        return _flag_file(self.directory, service)

    def load(self, service: str) -> MaintenanceFlag | Literal[Unknown.UNKNOWN] | None:
        """The service's flag, None without one, UNKNOWN while nerve cannot tell."""
        if self._pending.get(service) == "remove":
            return None  # ended: the file left behind is stale, never read back
        flag = self._memory.get(service) or self._read(service)
        if isinstance(flag, MaintenanceFlag) and service in self._owners:
            return self._owned(service, flag, self._owners[service])
        return flag

    def _read(self, service: str) -> MaintenanceFlag | Literal[Unknown.UNKNOWN] | None:
        if self.directory is None:
            return None
        path = self._file(service)
        try:
            flag = _parse(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            self._read_again(service, path, None)
            return None
        except OSError as exc:
            there = None if at_own_limit(exc) else _exists(path)
            if there is False:  # (state_dir is a file, say)
                self._read_again(service, path, None)
                return None
            if there is None:
                # Not cached: the next read may well succeed (UNKNOWN keeps what the service
                # had: a registration is not withdrawn because a directory cannot be searched).
                self._note_unknown(service, path, exc)
                return UNKNOWN
            return self._stand_in(service, path, exc)
        except (ValueError, KeyError, TypeError) as exc:
            return self._stand_in(service, path, exc)
        self._read_again(service, path, flag)
        self._memory[service] = flag
        return flag

    def _stand_in(self, service: str, path: Path, exc: Exception) -> MaintenanceFlag:
        """A flag file that is there but cannot be read still means someone wanted the
        service out: stay out. Not cached: read again every round until the file speaks."""
        flag = self._unreadable.get(service)
        if flag is None:  # (logged once per streak)
            event(log, "maintenance_flag_unreadable", logging.WARNING, file=str(path),
                  error=str(exc)[:160])  # fmt: skip
            reason = f"unreadable flag file {path}"
            flag = MaintenanceFlag(reason=reason, since=time.time(), unreadable=True)
            self._unreadable[service] = flag
        self._unknown.discard(service)
        return flag

    def _note_unknown(self, service: str, path: Path, exc: OSError) -> None:
        self._unreadable.pop(service, None)
        if service in self._unknown:
            return  # once per streak: at the open-file limit every round may hit this
        self._unknown.add(service)
        if at_own_limit(exc):
            detail = "nerve is out of resources: read again next round"
        else:
            detail = "nerve cannot tell whether the file is there: read again every round"
        event(log, "maintenance_flag_unknown", logging.WARNING, service=service,
              file=str(path), error=str(exc)[:160], detail=detail)  # fmt: skip

    def _read_again(self, service: str, path: Path, flag: MaintenanceFlag | None) -> None:
        """The file read (or found absent) after a streak of UNKNOWN or unreadable."""
        if service in self._unknown or self._unreadable.pop(service, None) is not None:
            self._unknown.discard(service)
            event(log, "maintenance_flag_readable", service=service, file=str(path),
                  flag=flag.reason if flag else "none")  # fmt: skip

    def save(self, service: str, flag: MaintenanceFlag) -> bool:
        """Put ``flag`` in force; whether its file holds it (else written again every round)."""
        if flag.container is None and service in self._owners:  # a container's service
            flag = replace(flag, container=self._owners[service])
        self._memory[service] = flag
        return self._follow(service, "save")

    def clear(self, service: str) -> bool:
        """End the flag; whether its file is gone (else removed again every round)."""
        self._memory.pop(service, None)
        return self._follow(service, "remove")

    def _follow(self, service: str, what: str) -> bool:
        self._unreadable.pop(service, None)  # the operator's word replaces the file's
        self._unknown.discard(service)
        if self.directory is None:
            return False  # flags in memory only
        self._pending[service] = what
        self._errors.pop(service, None)  # (an operator's new order: its failure is logged)
        return self.retry(service)

    def retry(self, service: str) -> bool:
        """Write the flag, or remove the file of the ended one, if the file lags (every
        round); whether the file now agrees with the flag in force."""
        what = self._pending.get(service)
        if what is None:
            return self.directory is not None
        try:
            self._write(service) if what == "save" else self._remove(service)
        except OSError as exc:
            if service not in self._errors:  # once per streak: a full disk fails every round
                if what == "save":
                    _warn("maintenance_flag_not_saved", service, exc, NOT_SAVED)
                else:
                    _warn("maintenance_flag_not_removed", service, exc, NOT_REMOVED)
            self._errors[service] = str(exc)[:160]
            return False
        del self._pending[service]
        if self._errors.pop(service, None) is not None:
            event(log, "maintenance_flag_saved" if what == "save" else "maintenance_flag_removed",
                  service=service)  # fmt: skip
        return True

    def persist_error(self, service: str) -> str | None:
        """Why the service's flag file does not agree with the flag in force (None: it does)."""
        if self.directory is None:
            return "no state_dir: flags are kept in memory only"
        return self._errors.get(service, "not written yet") if service in self._pending else None

    def _write(self, service: str) -> None:
        assert self.directory is not None
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self._file(service)
        tmp = path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(self._memory[service].to_json()) + "\n", encoding="utf-8")
            tmp.replace(path)  # atomic: a crash never leaves half a flag
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)  # (a full disk leaves a truncated one)
            raise

    def _remove(self, service: str) -> None:
        path = self._file(service)
        try:
            path.unlink(missing_ok=True)
        except OSError:
            if _exists(path) is not False:  # (a read-only disk refuses one not there, too)
                raise

    # --- Docker mode: flags that belong to a container ---------------------------------------

    def bind(self, service: str, container: str) -> None:
        """``service`` is container ``container``'s now (Docker mode): a flag another container
        of that name left is dropped at once, and flags saved from now on carry the id."""
        self._owners[service] = container
        self.load(service)

    def unbind(self, service: str) -> None:
        """The container's service is gone (stopped, removed); its flag stays as it is."""
        self._owners.pop(service, None)

    def _owned(self, service: str, flag: MaintenanceFlag, owner: str) -> MaintenanceFlag | None:
        if flag.unreadable:
            return flag  # whose it was cannot be told: it holds, as for any service
        if flag.container is None:  # saved by a nerve that did not record containers
            self.save(service, flag)  # ... taken as the container's there now
            return self._memory[service]
        if flag.container != owner:
            self._drop(service, flag, "container replaced")
            return None
        return flag

    def containers(self) -> dict[str, str]:
        """Every flag that belongs to a container: service name -> the container's id. Read
        from the files (not cached: a stopped container's flag stays on disk only)."""
        owned = {name: f.container for name, f in self._memory.items() if f.container}
        for path in self.directory.glob("*.json") if self.directory else ():
            name = urllib.parse.unquote(path.name[: -len(".json")])
            if self._pending.get(name) == "remove":
                continue  # ended: a stale file
            try:
                container = _parse(path.read_text(encoding="utf-8")).container
            except (OSError, ValueError, KeyError, TypeError):
                continue  # (read, and logged, when its service is)
            if container and name not in self._memory:
                owned[name] = container
        return owned

    def drop_container(self, container: str, reason: str) -> list[str]:
        """Remove the flags of a container that no longer exists; the services whose flag it
        was. A new container under the same name must not inherit an old one's maintenance."""
        dropped = [name for name, owner in self.containers().items() if owner == container]
        for name in dropped:
            flag = self._memory.get(name) or self._read(name)
            if isinstance(flag, MaintenanceFlag):
                self._drop(name, flag, reason)
        return dropped

    def _drop(self, service: str, flag: MaintenanceFlag, reason: str) -> None:
        self.clear(service)
        event(log, "maintenance_dropped", service=service, container=(flag.container or "")[:12],
              reason=reason, ended=flag.reason)  # fmt: skip


NOT_SAVED = "in force now; written again every round (a restart before that loses it)"
NOT_REMOVED = "ended now; removed again every round (a restart before that brings it back)"


@functools.lru_cache(maxsize=1024)
def _flag_file(directory: Path, service: str) -> Path:
    """A service's flag file, built once: every round reads it. pathlib (Python 3.11) interns
    each part of a path it builds; a name interned and freed every round wore out the
    interpreter's table of interned strings, whose ~1 MB resize every ~25,000 rounds left a
    hole in the heap that small objects then pinned (at 100 rounds a second the heap grew
    ~0.9 MB every ~17 minutes; at the default interval, a step every 10-20 hours). Service
    names come from config keys: quoted into a safe file name."""
    return directory / f"{urllib.parse.quote(service, safe='')}.json"


def _exists(path: Path) -> bool | None:
    """Whether ``path`` exists; None when nerve cannot tell (its directory cannot be
    searched, EACCES; the disk fails, EIO)."""
    try:
        os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError:
        return None
    return True


def _warn(what: str, service: str, exc: OSError, detail: str) -> None:
    event(log, what, logging.WARNING, service=service, error=str(exc)[:160], detail=detail)
