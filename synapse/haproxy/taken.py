"""A running HAProxy's listening sockets, taken out of its workers (``pidfd_getfd``).

A master whose socket files are gone (synapse.haproxy.replacement) cannot hand its listeners
over on its admin socket, and a restarted synapse has no copies of them. A new master that
binds the ports beside the old one (SO_REUSEPORT) works, but the kernel splits connections
between the two sockets, and the ones waiting in the old socket's queue when its worker
closes it are reset (measured: 1 of ~11,500 requests in 1 run of 3, 8 clients). Linux 5.6+
lets a process copy another's file descriptor (``pidfd_getfd``: same user and ptrace
access, or CAP_SYS_PTRACE); with copies of the very sockets, the new master takes them
(``-x``) as after a crash, and nothing is split or reset. Where the kernel refuses (Yama
``ptrace_scope`` 1 or more, a container without CAP_SYS_PTRACE), the new master binds beside.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import socket
from pathlib import Path
from typing import Any

from synapse.haproxy import ports
from synapse.haproxy.getsocks import Held
from synapse.haproxy.listeners import ListenerKeeper

SYS_PIDFD_GETFD = 438  # the same number on every architecture of the generic syscall table
NO_NAMES = bytes(6)  # _getsocks's description: no namespace, no interface, 4 unused bytes


@functools.cache
def _libc() -> Any:
    # Loaded at the first take, not at import: ctypes costs every sidecar ~0.3 MB of RSS
    # for a path only a replaced master with lost socket files takes.
    import ctypes

    return ctypes.CDLL(None, use_errno=True)


def _getfd(pidfd: int, fd: int) -> int:
    libc = _libc()
    copy = libc.syscall(SYS_PIDFD_GETFD, pidfd, fd, 0)  # (close-on-exec, flags kept)
    if copy < 0:
        import ctypes

        err = ctypes.get_errno()
        raise OSError(err, f"pidfd_getfd: {os.strerror(err)}")
    return int(copy)


def _listening_fds(pid: int, inodes: set[str]) -> dict[str, int]:
    """inode -> descriptor in process ``pid`` of those of ``inodes`` it holds."""
    found: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for entry in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                link = os.readlink(entry)
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    found.setdefault(link[8:-1], int(entry.name))
    return found


def take_listeners(master: int) -> list[Held]:
    """Copies of the TCP listening sockets of ``master``'s workers (blocking; OSError when
    the kernel refuses one: then none is kept)."""
    listening = {inode for _ip, _port, inode in ports.listeners()}
    held: dict[str, Held] = {}
    try:
        for worker in sorted(ports.family(master) - {master}):
            wanted = listening - held.keys()
            fds = _listening_fds(worker, wanted)
            if not fds:
                continue
            pidfd = os.pidfd_open(worker)
            try:
                for inode, fd in fds.items():
                    sock = socket.socket(fileno=_getfd(pidfd, fd))  # (leaves O_NONBLOCK)
                    held[inode] = Held(sock, NO_NAMES)
            finally:
                os.close(pidfd)
    except OSError:
        for h in held.values():
            h.sock.close()
        raise
    return list(held.values())


async def handed_copies(listeners: ListenerKeeper | None, master: int) -> str:
    """How a master replacing ``master`` gets the listeners: synapse's copies, else copies
    taken out of its workers now, else it binds the ports beside them."""
    if listeners is None:
        return "bound beside its own (managed.hold_listeners: false)"
    if listeners.held:
        return "handed over"
    try:
        listeners.keep(await asyncio.to_thread(take_listeners, master))
    except OSError as err:
        return f"bound beside its own ({err})"
    return "taken from its workers, handed over"
