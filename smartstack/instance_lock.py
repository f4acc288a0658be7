"""One daemon per config: an instance lock held for the daemon's whole life.

Two synapses on one HAProxy config reload each other's work away; two nerves on one
config delete each other's registrations as leftovers (review s26 "two copies overlap").
So the daemon, before anything touches HAProxy or a registry, takes ``flock(LOCK_EX)`` on a
lock file beside what it owns (synapse: ``<haproxy config_file_path>.lock``; nerve:
``<state_dir>/nerve.lock``) and keeps it until it exits: the kernel releases it however the
process ends (a SIGKILL too), so a stale file never blocks a start.

A second copy that finds the lock held waits (the first may be stopping: a restart overlap,
a container replaced while the old one still drains) up to a bound, then exits 1 with a
message. The file records the holder's pid (for that message only). The descriptor is
O_CLOEXEC: HAProxy, exec checks and config children never hold it. Both daemons' self
re-exec (Docker mode, an edge: ``*.config_load``) happens while loading the config, before
the lock is taken. ``-k`` never takes it. systemd's READY=1 comes after it (the daemon
serves only once it holds it), so a unit's new copy is "starting" while it waits.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from smartstack.logs import event

log = logging.getLogger("smartstack.instance_lock")

WAIT_ENV = "SMARTSTACK_INSTANCE_LOCK_WAIT"  # seconds; tests shorten the wait with it
SYNAPSE_WAIT_S = 30.0  # its stop can take managed.stop_grace (8 s) and more
NERVE_WAIT_S = 15.0  # its stop withdraws within ~5 s
POLL_S = 0.1

_held: list[int] = []  # the locked descriptors: open until the process exits


def synapse_lock(config: Any, config_path: str) -> None:
    """Hold synapse's lock, or exit 1 (see the module's docstring)."""
    hap, out = config.haproxy, config.file_output
    if hap is not None and hap.config_file_path and (hap.do_writes or hap.managed):
        path, what = Path(f"{hap.config_file_path}.lock"), "config_file_path"
    elif hap is not None and hap.state_file_path:
        path, what = Path(f"{hap.state_file_path}.lock"), "haproxy.state_file_path"
    elif out is not None:
        path, what = Path(out.output_directory) / "synapse.lock", "file_output.output_directory"
    else:
        reason = "no haproxy config_file_path, state_file_path or file_output to lock beside"
        event(log, "instance_lock_skipped", level=logging.WARNING, reason=reason)
        return
    hold("synapse", path, config_path, f"another {what}", _wait(SYNAPSE_WAIT_S))


def nerve_lock(config: Any, config_path: str) -> None:
    """Hold nerve's lock in its state_dir (by default ``nerve-state`` beside the config
    file: two configs in one directory share it, as they share maintenance flags)."""
    from nerve.daemon import resolve_state_dir

    state_dir = resolve_state_dir(config, Path(config_path))
    assert state_dir is not None  # (None only for a daemon built without a file)
    hold("nerve", state_dir / "nerve.lock", config_path, "another state_dir", _wait(NERVE_WAIT_S))


def _wait(default: float) -> float:
    try:
        return max(0.0, float(os.environ.get(WAIT_ENV, default)))
    except ValueError:
        return default


def hold(daemon: str, path: Path, config_path: str, other: str, wait_s: float) -> None:
    """Take the lock at ``path``, waiting up to ``wait_s`` for a holder to exit; exit 1 when
    it does not. A lock that cannot be made (a read-only directory, no locks on the file
    system) is warned about and the daemon runs without one, as it did before."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        _unavailable(path, exc)
        return
    start = time.monotonic()
    waiting = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            pass
        except OSError as exc:  # (ENOLCK: a file system without locks)
            os.close(fd)
            _unavailable(path, exc)
            return
        holder = _holder(fd)
        if not waiting:
            waiting = True
            event(log, "instance_lock_waiting", holder_pid=holder, path=str(path), wait_s=wait_s)
        if time.monotonic() - start >= wait_s:
            event(log, "instance_lock_held", level=logging.ERROR, holder_pid=holder,
                  path=str(path), waited_s=round(wait_s, 1))  # fmt: skip
            print(f"error: {daemon} pid {holder} already runs with {config_path} (lock {path}):"
                  f" stop it first, or give this one {other}", file=sys.stderr)  # fmt: skip
            raise SystemExit(1)
        time.sleep(POLL_S)
    try:  # (for the message of a copy that waits; a full disk does not undo the lock)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError:
        pass
    _held.append(fd)
    if waiting:
        event(log, "instance_lock_taken", path=str(path),
              waited_s=round(time.monotonic() - start, 1))  # fmt: skip


def _holder(fd: int) -> str:
    """The holder's pid as it wrote it ("?" in the instant before it writes)."""
    try:
        return os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
    except OSError:
        return "?"


def _unavailable(path: Path, exc: OSError) -> None:
    event(log, "instance_lock_unavailable", level=logging.WARNING, path=str(path),
          error=f"{type(exc).__name__}: {exc}", detail="running without the guard")  # fmt: skip
