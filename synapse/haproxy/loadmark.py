"""Whether HAProxy runs the config file: the one window where it may not, marked on disk.

The installer makes a candidate the config file before HAProxy loads it (HAProxy reads
the file). If synapse dies in between (kill -9, OOM, a stop that cancelled the reload),
the file says the candidate while HAProxy still runs the config before it, and the next
synapse, which plans against the file, would never reload for what the candidate changed
(a frontend's new port, say). So beside the config file, ``<config>.loaded`` says:

- ``installing``: written (atomically, fsynced) before the candidate reaches the file;
- ``loaded <dev>:<inode>:<size>:<mtime_ns>:<ctime_ns>``: written once HAProxy was
  confirmed to run the file (a start, a reload), naming the file it vouches for, and kept
  naming it through each of synapse's own writes of it (runtime changes, ``write_config``:
  before the rename it names the file and the staged one, ``<dev>:<inode>:<size>:<mtime_ns>``
  as a rename changes the ctime; after it, the new file alone; not fsynced: a marker lost
  to a power cut costs one reload). The ctime: no ``utime`` sets it, and on ext4 atomic
  writes alternate between two inodes.

At start, ``installing``, no marker beside an existing config file (a synapse from before
the marker: an upgrade costs one reload), or a marker naming another file than the one
on disk, means the running config is unknown: the first apply reloads (validated)
whatever its plan says (``with_reload``). Another file: something else wrote it since,
which does not know the marker: an older synapse after a rollback (killed between its
write and its reload: a new port was never bound, the marker said ``loaded``), a hand
edit. The state file is then behind what HAProxy runs as well (``vouches``, used by
``synapse.daemon_parts``).

Not a digest of the loaded text: the file also changes without a reload, whenever runtime
commands changed servers (it stays equal to what HAProxy runs); its identity is cheap to
follow (a stat and an unsynced marker per write, at most one a second: ``configfile``).
The install window is the only time synapse puts the file ahead of HAProxy.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from smartstack.logs import event
from synapse.atomic import discard, read_text, stage, write_atomic
from synapse.haproxy.ops import Plan, Reload

log = logging.getLogger("synapse.haproxy")

INSTALLING, LOADED = "installing\n", "loaded"
# Why an adopted HAProxy may not run the config file, by what the marker said at the start
NO_MARKER = "no load marker: written by an older synapse (an upgrade) or another tool"
MID_INSTALL = "synapse stopped between writing it and the reload"
CHANGED = "the file changed since HAProxy loaded it: written since by something else"


def unconfirmed_reason(marker: str | None) -> str:
    """The reload's reason when the marker (its text, None: no marker) does not vouch for
    the config file."""
    if marker is None:
        why = NO_MARKER
    elif marker.startswith(LOADED):  # (or a marker without identity)
        why = CHANGED
    else:
        why = MID_INSTALL
    return f"HAProxy may not run the config file ({why})"


def marker_path(config_path: Path) -> Path:
    return config_path.with_name(config_path.name + ".loaded")


def identity(path: Path) -> str | None:
    """The file as it is on disk now (None: none). Every writer replaces it or rewrites it
    (a new ctime, whatever it does to the mtime): either way another identity."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return f"{_staged(st)}:{st.st_ctime_ns}"


def _staged(st: os.stat_result) -> str:
    """A file's identity but its ctime (a staged file's: the rename into place sets it)."""
    return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"


def _names(token: str, found: str) -> bool:
    return token == found or (token.count(":") == 3 and found.startswith(f"{token}:"))


def loaded_text(config_path: Path) -> str | None:
    """The marker for the config file as it is on disk now (None: there is none)."""
    found = identity(config_path)
    return None if found is None else f"{LOADED} {found}\n"


def vouches(config_path: Path, marker: str | None = None) -> bool:
    """The marker (``marker``: its text, else read) says HAProxy runs the config file as it
    is on disk: no other writer came after synapse's last write (blocking: a thread)."""
    if marker is None:
        marker = read_text(marker_path(config_path))
    found = identity(config_path)
    words = (marker or "").split()
    return found is not None and words[:1] == [LOADED] and any(_names(w, found) for w in words[1:])


def behind(config_path: Path) -> bool:
    """The config file changed since this synapse last wrote it: the marker names another
    file, or there is none (blocking: a thread). A bare ``loaded`` (the release before the
    identity, which kept the default state file current) is not: only unknown."""
    marker = read_text(marker_path(config_path))
    if marker is not None and marker.strip() == LOADED:
        return False
    return not vouches(config_path, marker)


class LoadMark:
    def __init__(self, config_path: Path) -> None:
        self.config_path = config_path
        self.path = marker_path(config_path)
        self.unknown = False  # HAProxy may run something else than the file: reload once
        self.reason = unconfirmed_reason(None)  # (why, when ``unknown``)
        self._on_disk: str | None = None
        self._lock = asyncio.Lock()  # one write at a time: the last one names the file

    async def load(self, file_exists: bool) -> None:
        self._on_disk = text = await asyncio.to_thread(read_text, self.path)
        self.unknown = file_exists and not await asyncio.to_thread(vouches, self.config_path, text)
        if self.unknown:
            self.reason = unconfirmed_reason(text)
            found = "no marker" if text is None else text.strip()[:80]
            event(log, "haproxy_config_unconfirmed", level=logging.WARNING,
                  marker=str(self.path), found=found, reason=self.reason,
                  detail="an adopted HAProxy may not run the config file: the first "
                  "apply reloads it")  # fmt: skip

    async def installing(self) -> None:
        """Before the candidate reaches the file (OSError when it cannot be written)."""
        async with self._lock:
            await asyncio.to_thread(self._write, INSTALLING)

    async def loaded(self) -> None:
        """HAProxy was confirmed to run the file: the marker names it as it is now."""
        self.unknown = False
        try:
            async with self._lock:  # (the file's identity is read in the writing thread)
                await asyncio.to_thread(self._write, None)
        except OSError as err:
            self._failed(err)

    async def write_config(self, path: Path, parts: tuple[str, ...]) -> None:
        """Write the config file (``ConfigFile``'s writer; OSError when it cannot be) and,
        while HAProxy is known to run it, keep the marker naming it with no moment between:
        before the rename the marker names the file and the staged one, after it the new
        one alone. One thread call: a kill -9 or a cancelled writer cannot come between
        the rename and the marker (else the next synapse reloads, and takes the state
        file for behind HAProxy). Not in the install window: ``installing`` stays."""
        async with self._lock:
            vouch = not self.unknown and (self._on_disk or "").startswith(LOADED)
            await asyncio.to_thread(self._write_config, path, parts, vouch)

    def _write_config(self, path: Path, parts: tuple[str, ...], vouch: bool) -> None:
        tmp = stage(path, "".join(parts))
        try:
            if vouch:  # (the marker's last file: the one on disk, if nothing else wrote it)
                last = (self._on_disk or "").split()[-1]
                self._mark(f"{LOADED} {last} {_staged(os.stat(tmp))}\n")
            os.replace(tmp, path)
        except BaseException:
            discard(tmp)
            raise
        if vouch:
            self._mark(None)

    def _mark(self, text: str | None) -> None:
        """An unsynced marker (a marker lost to a power cut costs one reload); a failure
        is logged, not fatal: the next synapse reloads once."""
        try:
            self._write(text, sync=False)
        except OSError as err:
            self._failed(err)

    def _failed(self, err: OSError) -> None:
        event(log, "haproxy_load_mark_failed", level=logging.WARNING,
              path=str(self.path), error=str(err))  # fmt: skip

    def with_reload(self, plan: Plan) -> Plan:
        """``plan``, with a reload while the running config is unknown."""
        if not self.unknown:
            return plan
        reasons = (plan.reload.reasons if plan.reload else ()) + (("config", self.reason),)
        return Plan(plan.ops, Reload(reasons), plan.active)

    def _write(self, text: str | None, sync: bool = True) -> None:
        """``text`` (None: ``loaded`` with the config file as it is now) into the marker."""
        if text is None:
            text = loaded_text(self.config_path)
            if text is None:  # (no config file: nothing to vouch for)
                return
        if self._on_disk != text:
            write_atomic(self.path, text, sync=sync)
            self._on_disk = text
