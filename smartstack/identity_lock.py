"""Host-wide locks on what a daemon registers: Linux abstract unix sockets.

The instance lock file (``smartstack.instance_lock``) lives in nerve's state_dir, which is
taken from the config's path: one config reached by paths in two directories (a link
elsewhere, a ``current -> release/vN`` flip, two copies of the file) got two state_dirs
and two locks, and another user's 0600 file (an older version's) could not be opened at
all, so both copies ran unguarded and fought over one registration (review s28).

So nerve also binds one listening socket per registration it makes, named
``@smartstack-nerve-<digest of the registration's identity>`` in the abstract namespace:
no file (no path, no owner, no mode), one name per host (per network namespace: a
container with its own netns has its own names), and the kernel frees it when the process
ends, a SIGKILL too. A second bind of the name fails (EADDRINUSE): that registration is
taken. The holder answers a connection with its pid and config path, one line each (a
reader on its event loop, ``answer_on``); the kernel's SO_PEERCRED gives the pid anyway
when the holder's loop does not answer in time.
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

from smartstack.lock_wait import wait_turn, warn_unavailable

log = logging.getLogger("smartstack.identity_lock")

ANSWER_TIMEOUT_S = 0.3  # the holder's loop answers at once; a busy one: SO_PEERCRED's pid
BACKLOG = 16
SUPPORTED = sys.platform.startswith("linux")  # the abstract namespace is Linux's

_held: dict[str, socket.socket] = {}  # name -> listening socket, open until released
_answer = b""  # what the holder says: "<pid>\n<config>\n"
_loop: asyncio.AbstractEventLoop | None = None
_active = False  # the names were taken at start (hold_all): a reload takes its own too


class Taken(Exception):
    """The name is bound by another process."""


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
            raise Taken(name) from None
        raise
    _held[name] = sock
    if _loop is not None:
        _loop.add_reader(sock.fileno(), _answer_one, sock)


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
    except OSError:  # (gone meanwhile, or out of descriptors: the asker uses SO_PEERCRED)
        return
    with conn, contextlib.suppress(OSError):
        conn.setblocking(False)
        conn.send(_answer)  # (a few bytes into an empty buffer: never blocks)


def holder(name: str) -> tuple[str, str | None]:
    """The holder's pid ("?" unknown) and config path (None unknown), as it answers."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    pid, config = "?", None
    try:
        sock.settimeout(ANSWER_TIMEOUT_S)
        sock.connect(f"\0{name}")
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        peer = struct.unpack("3i", creds)[0]
        pid = str(peer) if peer > 0 else "?"  # (0: a holder in another pid namespace)
        data = b""
        while data.count(b"\n") < 2:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
        lines = data.decode(errors="replace").splitlines()
        if len(lines) >= 2 and lines[0].isdigit() and lines[1].strip():
            pid, config = lines[0], lines[1].strip()
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
    as it does (``instance_lock.wait_turn``). Not Linux, or a name that cannot be made:
    warned, and the daemon runs on the lock file alone."""
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
            except Taken:
                return False
            return True

        left = max(0.0, wait_s - (time.monotonic() - start))
        owner = lambda name=name: holder(name)  # noqa: E731
        try:
            wait_turn(daemon, shown(name), config_path, other, left, attempt, owner,
                      **{field: ",".join(by_name[name])})  # fmt: skip
        except OSError as exc:
            warn_unavailable(shown(name), exc)


def retake(daemon: str, identities: dict[str, list[str]]) -> tuple[set[str], list[str]]:
    """A reload's identities: the names it adds taken now, without a wait. Returns the
    names no longer wanted (the caller releases them once the reload is applied) and, when
    another process holds one it adds, what it says (and nothing is taken)."""
    if not _active:  # (a daemon started without them: a test's, in-process; not Linux)
        return set(), []
    wanted = {socket_name(daemon, identity): names for identity, names in identities.items()}
    added: list[str] = []
    conflicts: list[str] = []
    for name in sorted(set(wanted) - set(_held)):
        try:
            take(name)
            added.append(name)
        except Taken:
            pid, config = holder(name)
            services = ",".join(wanted[name])
            conflicts.append(f"services {services}: {daemon} pid {pid} already registers them"
                             f" (with {config or '?'}, lock {shown(name)})")  # fmt: skip
        except OSError as exc:  # (not made: the reload goes on without that guard)
            warn_unavailable(shown(name), exc)
    if conflicts:
        release(added)
        return set(), conflicts
    return set(_held) - set(wanted), []
