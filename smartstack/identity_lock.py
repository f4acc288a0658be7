"""Host-wide locks on what a daemon registers: Linux abstract unix sockets.

The instance lock file (``smartstack.instance_lock``) lives in nerve's state_dir, which is
taken from the config's path: one config reached by paths in two directories (a link
elsewhere, a ``current -> release/vN`` flip, two copies of the file) got two state_dirs
and two locks, and another user's 0600 file (an older version's) could not be opened at
all, so both copies ran unguarded and fought over one registration (review s28).

So nerve also binds one listening socket, named ``@smartstack-nerve-<digest of the sorted
set of its registrations' identities>`` in the abstract namespace (one per nerve, not one
per registration: a descriptor each starved a nerve of 1,000 services, review s28 HIGH-2):
no file (no path, no owner, no mode), one name per host (per network namespace: a
container with its own netns has its own names), and the kernel frees it when the process
ends, a SIGKILL too. A second bind of the name fails (EADDRINUSE): that config runs. Names
have no owner, so one held by a process of another user (neither ours nor root) that
neither answers as ours do nor runs nerve or synapse is a squatter's: warned, and the
daemon goes on with its lock file alone (review s28 MEDIUM-1; a nerve of another user is a
copy: it is waited for).
The holder answers a connection with its pid and config path, one line each (a
reader on its event loop, ``answer_on``); the kernel's SO_PEERCRED gives the pid anyway
when the holder's loop does not answer in time, and is preferred when it gives one (a
holder in another pid namespace answers with its own namespace's pid).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import logging
import os
import socket
import struct
import sys
import time
from collections.abc import Iterable
from pathlib import Path

from smartstack.lock_wait import wait_turn, warn_unavailable
from smartstack.logs import event

log = logging.getLogger("smartstack.identity_lock")

ANSWER_TIMEOUT_S = 0.3  # the holder's loop answers at once; a busy one: SO_PEERCRED's pid
BACKLOG = 16
DAEMONS = ("nerve", "synapse")  # a holder running one of these is a copy, whatever its uid
SUPPORTED = sys.platform.startswith("linux")  # the abstract namespace is Linux's

_held: dict[str, socket.socket] = {}  # name -> listening socket, open until released
_answer = b""  # what the holder says: "<pid>\n<config>\n"
_loop: asyncio.AbstractEventLoop | None = None
_active = False  # the names were taken at start (hold_all): a reload takes its own too
_warned: set[str] = set()  # squatted names already warned about (once each)
RETRY_ACCEPT_S = 1.0  # out of descriptors: the reader rests this long (no busy loop)


class Taken(Exception):
    """The name is bound by another process."""


class ReloadClash(Exception):
    """A reload's set of registrations is the very set another running daemon holds."""


class Squatted(Taken):
    """The name is bound by a process of another user (neither ours nor root)."""

    def __init__(self, name: str, pid: str, uid: int) -> None:
        super().__init__(name)
        self.pid, self.uid = pid, uid


def socket_name(daemon: str, identity: str) -> str:
    """The abstract name (without its leading NUL) for one registration identity."""
    digest = hashlib.sha256(identity.encode()).hexdigest()[:40]
    return f"smartstack-{daemon}-{digest}"


def shown(name: str) -> str:
    """The name as /proc/net/unix and ``ss -x`` show it."""
    return f"@{name}"


def set_answer(config_path: str) -> None:
    global _answer
    _answer = f"{os.getpid()}\n{os.path.abspath(config_path)}\n".encode()


def held() -> set[str]:
    return set(_held)


def take(name: str) -> None:
    """Bind and listen on ``name``; Taken when another process has it, OSError when it
    cannot be made at all (no abstract namespace, out of descriptors)."""
    if name in _held:
        return
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # (close-on-exec: no child has it)
    try:
        sock.bind(f"\0{name}")
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            pid, uid = _peer(name)
            if uid is not None and uid not in (os.getuid(), 0) and not _ours(name, pid):
                raise Squatted(name, pid, uid) from None
            raise Taken(name) from None
        raise
    _held[name] = sock
    if _loop is not None:
        _loop.add_reader(sock.fileno(), _answer_one, sock)


def _ours(name: str, pid: str) -> bool:
    """Whether a holder of another uid is a nerve or synapse all the same: a root copy of a
    service user's config (through a link) ran beside it as if it were a squatter's name,
    stood its registrations aside, and left none when it stopped (review s28 lock2 HIGH)."""
    if holder(name)[1] is not None:  # (it answers as ours do: "<pid>\n<config>\n")
        return True
    try:  # (a holder whose loop does not answer yet: what it runs)
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:3]
    except (OSError, ValueError):
        return False
    return any(
        os.path.basename(arg.decode(errors="replace")).split(".")[0] in DAEMONS for arg in argv
    )


def release(names: Iterable[str]) -> None:
    for name in names:
        sock = _held.pop(name, None)
        if sock is None:
            continue
        if _loop is not None:
            with contextlib.suppress(Exception):
                _loop.remove_reader(sock.fileno())
        sock.close()


def answer_on(loop: asyncio.AbstractEventLoop) -> None:
    """Answer who holds the names from now on (a waiting copy names us). Until then a
    connection waits in the backlog, and the asker falls back to SO_PEERCRED."""
    global _loop
    _loop = loop
    for sock in _held.values():
        loop.add_reader(sock.fileno(), _answer_one, sock)


def _answer_one(sock: socket.socket) -> None:
    try:
        conn, _ = sock.accept()
    except OSError as exc:  # (gone meanwhile, or out of descriptors: the asker uses SO_PEERCRED)
        if exc.errno in (errno.EMFILE, errno.ENFILE) and _loop is not None:
            # the queued connection stays ready: a level-triggered reader would spin at
            # 100% CPU (review s28 MEDIUM-3); it rests, then listens again
            _loop.remove_reader(sock.fileno())
            _loop.call_later(RETRY_ACCEPT_S, _listen_again, sock)
        return
    with conn, contextlib.suppress(OSError):
        conn.setblocking(False)
        conn.send(_answer)  # (a few bytes into an empty buffer: never blocks)


def _listen_again(sock: socket.socket) -> None:
    if _loop is not None and any(held is sock for held in _held.values()):
        _loop.add_reader(sock.fileno(), _answer_one, sock)


def _creds(sock: socket.socket) -> tuple[int, int]:
    """The connected peer's pid (0: in a pid namespace we cannot see) and uid."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, _ = struct.unpack("3i", creds)
    return pid, uid


def _peer(name: str) -> tuple[str, int | None]:
    """The holder's pid ("?") and uid (None: it could not be asked) by SO_PEERCRED."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(ANSWER_TIMEOUT_S)
        sock.connect(f"\0{name}")
        pid, uid = _creds(sock)
        return (str(pid) if pid > 0 else "?"), uid
    except OSError:
        return "?", None
    finally:
        sock.close()


def holder(name: str) -> tuple[str, str | None]:
    """The holder's pid ("?" unknown) and config path (None unknown), as it answers."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    pid, config = "?", None
    try:
        sock.settimeout(ANSWER_TIMEOUT_S)
        sock.connect(f"\0{name}")
        peer = _creds(sock)[0]
        pid = str(peer) if peer > 0 else "?"  # (0: a holder in another pid namespace)
        data = b""
        while data.count(b"\n") < 2:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
        lines = data.decode(errors="replace").splitlines()
        if len(lines) >= 2 and lines[0].isdigit() and lines[1].strip():
            # (the kernel's pid first: the answer's is its own pid namespace's)
            pid, config = (pid if peer > 0 else lines[0]), lines[1].strip()
    except OSError:  # (a busy holder: its pid from the kernel, its config unknown)
        pass
    finally:
        sock.close()
    return pid, config


def hold_all(
    daemon: str,
    identities: dict[str, list[str]],
    config_path: str,
    other: str,
    wait_s: float,
    field: str = "services",
) -> None:
    """Take every identity's name (sorted by name: two copies that share several take
    them in one order), waiting up to ``wait_s`` in all as for the lock file; exit 1 or 130
    as it does (``instance_lock.wait_turn``). Not Linux, a name that cannot be made, or one
    another user squats: warned, and the daemon runs on the lock file alone."""
    global _active
    set_answer(config_path)
    if not SUPPORTED:
        return
    _active = True
    by_name = {socket_name(daemon, identity): names for identity, names in identities.items()}
    start = time.monotonic()
    for name in sorted(by_name):

        def attempt(name: str = name) -> bool:
            try:
                take(name)
            except Squatted as squat:  # (not a copy of ours: no wait for it)
                _warn_squatted(squat)
                return True
            except Taken:
                return False
            return True

        left = max(0.0, wait_s - (time.monotonic() - start))
        owner = lambda name=name: holder(name)  # noqa: E731
        try:
            wait_turn(daemon, shown(name), config_path, other, left, attempt, owner,
                      **{field: shown_list(by_name[name])})  # fmt: skip
        except OSError as exc:
            warn_unavailable(shown(name), exc)


def shown_list(names: list[str], most: int = 20) -> str:
    """Names for an event, the first ``most`` of them (a nerve of 1,000 services)."""
    more = f",... ({len(names)} in all)" if len(names) > most else ""
    return ",".join(names[:most]) + more


def _warn_squatted(squat: Squatted) -> None:
    name = squat.args[0]
    if name in _warned:
        return
    _warned.add(name)
    event(log, "instance_lock_squatted", level=logging.WARNING, path=shown(name),
          holder_pid=squat.pid, holder_uid=squat.uid,
          detail="held by another user's process: not a copy of ours, running with the"
          " lock file alone")  # fmt: skip


def retake(daemon: str, identity: str, services: list[str]) -> set[str]:
    """A reload's identity (one name per daemon): its name taken now without a wait, and
    the names it replaces returned (the caller releases them once the reload is applied).
    Not refused when the set merely changed (review s28 HIGH-1: a service moved between two
    nerves, the receiver reloaded first, was withdrawn for good: a move changes both sets,
    so they never meet). Refused (``ReloadClash``) only when another nerve runs this very
    set: applied, the other was stood aside and the service left registered nowhere once
    this one stopped (review s28 lock2 MEDIUM)."""
    if not _active:  # (a daemon started without them: a test's, in-process; not Linux)
        return set()
    name = socket_name(daemon, identity)
    try:
        take(name)  # (held by us already: nothing to do, the stale names still let go)
    except Squatted as squat:
        _warn_squatted(squat)
        return set()
    except Taken:
        pid, config = holder(name)
        raise ReloadClash(
            f"another {daemon} (pid {pid}, config {config or '?'}) runs this very set of"
            f" registrations ({shown_list(services)}, lock {shown(name)}): stop it first,"
            " or change this config"
        ) from None
    except OSError as exc:  # (not made: the reload goes on without that guard)
        warn_unavailable(shown(name), exc)
        return set()
    return set(_held) - {name}
