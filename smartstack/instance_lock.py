"""One daemon per config: an instance lock held for the daemon's whole life.

Two synapses on one HAProxy config reload each other's work away; two nerves on one
config delete each other's registrations as leftovers (review s26 "two copies overlap").
So the daemon, before anything touches HAProxy or a registry, takes ``flock(LOCK_EX)`` on a
lock file beside what it owns (synapse: ``<haproxy config_file_path>.lock``; nerve:
``<state_dir>/nerve-<config stem>-<digest of its real path>.lock``) and keeps it until it
exits: the kernel releases it however the process ends (a SIGKILL too), so a stale file
never blocks a start. Then it takes the same thing host-wide (``smartstack.identity_lock``,
review s28): nerve one abstract socket for its set of registrations, whatever its config's
path and state_dir; synapse one per locked file (its path and its directory's device and
inode); no file mode or owner hides those.

A second copy that finds the lock held waits (the first may be stopping: a restart overlap,
a container replaced while the old one still drains) up to a bound, then exits 1 with a
message. The file records the holder's pid and config path (for that message only). The
descriptor is O_CLOEXEC: HAProxy, exec checks and config children never hold it. Both
daemons' self re-exec (Docker mode, an edge: ``*.config_load``) happens while loading the
config, before the lock is taken. ``-k`` never takes it. systemd's READY=1 comes after it
(the daemon serves only once it holds it), so a unit's new copy is "starting" while it waits.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import time
from pathlib import Path
from typing import Any

from smartstack.identity_lock import hold_all
from smartstack.lock_wait import wait_turn, warn_unavailable
from smartstack.logs import event

log = logging.getLogger("smartstack.instance_lock")

WAIT_ENV = "SMARTSTACK_INSTANCE_LOCK_WAIT"  # seconds; tests shorten the wait with it
SYNAPSE_WAIT_S = 30.0  # its stop can take managed.stop_grace (8 s) and more
NERVE_WAIT_S = 15.0  # its stop withdraws within ~5 s
# Opening read-write failed for these, but the file may still open read-only, and flock
# needs no write access: a file made by another user (a root debug run before the unit's
# service user, or the reverse), a read-only file system, an immutable file.
_READ_ONLY_RETRY = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})

_held: list[int] = []  # the locked descriptors: open until the process exits


def synapse_lock_paths(config: Any) -> tuple[list[Path], str] | None:
    """synapse's lock files and the setting they stand for; None: nothing on disk to lock."""
    hap, out = config.haproxy, config.file_output
    if hap is not None and hap.config_file_path and (hap.do_writes or hap.managed):
        return _beside(hap.config_file_path), "config_file_path"
    if hap is not None and hap.state_file_path:
        return _beside(hap.state_file_path), "haproxy.state_file_path"
    if out is not None:
        return [Path(out.output_directory) / "synapse.lock"], "file_output.output_directory"
    return None


def _beside(file: str) -> list[Path]:
    """``<file>.lock``, and ``<its target>.lock`` too while ``file`` is a symlink: a copy
    that names the link and one that names the target exclude each other. The name's lock
    is always taken, not only the target's: synapse writes the file by rename, which
    replaces the link with a file, so after a first copy's first write a second copy of the
    same config finds no link, and the target's lock alone would not meet the first copy's.
    (A symlinked directory needs nothing: the kernel opens the one file whichever path.)"""
    paths = [Path(f"{file}.lock")]
    if os.path.islink(file):
        paths.append(Path(f"{os.path.realpath(file)}.lock"))
    return paths


def nerve_lock_paths(state_dir: Path, config_path: str) -> list[Path]:
    """``<state_dir>/nerve-<config stem>-<digest>.lock`` for the config's real path, and
    for the path as given (made absolute, links kept) when that differs; sorted, so two
    copies that share both take them in one order. The whole path's digest: two configs
    in one directory (one default ``nerve-state``) each get their own lock, so do two
    configs of one file name in different directories sharing one explicit state_dir
    (web/nerve.json, api/nerve.json: review s27). The real path's lock: one config by a
    symlink and by its own name. The given path's: a deploy that flips ``nerve.json ->
    releases/nerve-vN.json`` between two starts (the real paths differ, the name does
    not). Never ``*.json``: that is a maintenance flag's name in state_dir."""
    names = {os.path.realpath(config_path), os.path.abspath(config_path)}
    return sorted(state_dir / _lock_name(name) for name in names)


def _lock_name(path: str) -> str:
    digest = hashlib.sha256(os.fsencode(path)).hexdigest()[:12]
    return f"nerve-{Path(path).stem}-{digest}.lock"


def synapse_lock(config: Any, config_path: str) -> None:
    """Hold synapse's lock, or exit 1 (see the module's docstring)."""
    found = synapse_lock_paths(config)
    if found is None:
        reason = "no haproxy config_file_path, state_file_path or file_output to lock beside"
        event(log, "instance_lock_skipped", level=logging.WARNING, reason=reason)
        return
    paths, what = found
    wait_s, start = _wait(SYNAPSE_WAIT_S), time.monotonic()
    for path in paths:  # (one wait for both: the name's lock first, then the target's)
        left = max(0.0, wait_s - (time.monotonic() - start))
        hold("synapse", path, config_path, f"another {what}", left)
    # The same files host-wide, however they are reached: an older version's 0600 lock
    # file of another user leaves the ones above unopened (review s28).
    left = max(0.0, wait_s - (time.monotonic() - start))
    names = {_file_identity(name) for path in paths
             for name in (os.path.abspath(path), os.path.realpath(path))}  # fmt: skip
    hold_all("synapse", {name: [what] for name in names}, config_path, f"another {what}", left,
             field="setting")  # fmt: skip


def _file_identity(path: str) -> str:
    """A lock file's path and its directory's device and inode: one path in two mount
    namespaces (a tmpfs each, one network namespace) is two files (review s28 MEDIUM-2)."""
    try:
        st = os.stat(os.path.dirname(path))
    except OSError:  # (no directory: the file lock warned; the path alone)
        return path
    return f"{path}\0{st.st_dev}:{st.st_ino}"


def nerve_lock(config: Any, config_path: str) -> None:
    """Hold nerve's lock for this config file in its state_dir (by default ``nerve-state``
    beside the config file: two configs there share its flags, each has its own lock), then
    its registrations' host-wide lock (one name for the set; one wait for all)."""
    from nerve.daemon import resolve_state_dir

    state_dir = resolve_state_dir(config, Path(config_path))
    assert state_dir is not None  # (None only for a daemon built without a file)
    wait_s, start = _wait(NERVE_WAIT_S), time.monotonic()
    for path in nerve_lock_paths(state_dir, config_path):  # (one wait for both)
        left = max(0.0, wait_s - (time.monotonic() - start))
        hold("nerve", path, config_path, "another state_dir", left)
    # Then what it registers, whatever the file's path and state_dir (review s28): the
    # files above still exclude an older version's copy and name its config.
    left = max(0.0, wait_s - (time.monotonic() - start))
    hold_all("nerve", nerve_identities(config), config_path,
             "other registrations (instance_id, zk_path/etcd_path or host:port)", left)  # fmt: skip


def nerve_identities(config: Any) -> dict[str, list[str]]:
    """One identity (the set of its registrations'), with all its services: one name."""
    from nerve.registration_identity import nerve_identity

    services = sorted(config.services) + (["docker"] if config.docker is not None else [])
    return {nerve_identity(config.instance_id, config.services, config.docker): services}


def _wait(default: float) -> float:
    try:
        return max(0.0, float(os.environ.get(WAIT_ENV, default)))
    except ValueError:
        return default


def hold(daemon: str, path: Path, config_path: str, other: str, wait_s: float) -> None:
    """Take the lock at ``path``, waiting up to ``wait_s`` for a holder to exit; exit 1 when
    it does not, 130 on a SIGINT meanwhile. A lock that cannot be opened at all (a missing
    directory that cannot be made, another user's file this one may not read, no locks on
    the file system) is warned about and the daemon runs without one, as it did before."""
    opened = _open(path)
    if opened is None:
        return
    fd, writable = opened

    def take() -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False
        except OSError as exc:  # (ENOLCK: a file system without locks)
            os.close(fd)
            warn_unavailable(str(path), exc)
            raise _NoLock from None

    try:
        wait_turn(daemon, str(path), config_path, other, wait_s, take, lambda: _holder(fd))
    except _NoLock:
        return
    if writable:  # (for the message of a copy that waits; a full disk does not undo the lock)
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            # (the config as given, absolute: a waiting copy names the config it met)
            os.pwrite(fd, f"{os.getpid()}\n{os.path.abspath(config_path)}\n".encode(), 0)
    _held.append(fd)


class _NoLock(Exception):
    """The lock cannot be taken at all (warned): the daemon runs without it."""


def _open(path: Path) -> tuple[int, bool] | None:
    """The lock file's descriptor and whether it is writable; None (warned): no lock."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        if exc.errno not in _READ_ONLY_RETRY:
            warn_unavailable(str(path), exc)
            return None
        try:
            return os.open(path, os.O_RDONLY | os.O_CLOEXEC), False
        except OSError as again:  # (not there and not makable, or not readable either)
            warn_unavailable(str(path), again)
            return None
    # Readable by every user (a umask 077 made it 0600), so a copy run as another user can
    # still open it read-only and wait for it; not ours to change (EPERM) is fine.
    with contextlib.suppress(OSError):
        if os.fstat(fd).st_mode & 0o444 != 0o444:
            os.fchmod(fd, 0o644)
    return fd, True


def _holder(fd: int) -> tuple[str, str | None]:
    """The holder's pid and config path as it wrote them: "?" and None in the instant
    before it writes, or when the pid there is gone (a holder that could not write them:
    another user's file)."""
    try:
        lines = os.pread(fd, 4096, 0).decode(errors="replace").splitlines()
    except OSError:
        return "?", None
    pid = lines[0].strip() if lines else ""
    config = lines[1].strip() if len(lines) > 1 and lines[1].strip() else None
    if not pid.isdigit():
        return "?", None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return "?", None
    except OSError:  # (EPERM: it runs, as another user)
        pass
    return pid, config
