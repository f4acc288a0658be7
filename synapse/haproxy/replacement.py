"""A managed HAProxy whose socket files were removed while it ran, and the master it replaces.

A tmp cleaner or a config tool that purges synapse's HAProxy directory takes the admin and
master sockets with it. HAProxy serves on, but nothing reaches it any more: every runtime
command and every reload fails (the path is gone), and no reload could bring them back (a
SIGUSR2'd master binds its socket again, but its new worker inherits the old admin socket,
still unlinked). The way out is the one after a crash: a new master, started from the config
file, with the listening sockets synapse holds (``-x``, synapse.haproxy.listeners; without
copies it binds the ports beside the old one, which HAProxy's SO_REUSEPORT allows); once it
serves, the old master is soft-stopped (SIGUSR1): it ends as an old worker does after a
reload, when what it has in flight has (or at ``hard-stop-after``).

This module finds the missing sockets, makes the directories HAProxy binds into again, and
keeps the replaced masters until they are gone (reaped, logged).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from smartstack.logs import event
from smartstack.tasks import cancel_and_wait
from synapse.haproxy.output import close_relay
from synapse.haproxy.pids import end_master, reap, wait_pid_exit
from synapse.haproxy.settings import Settings

log = logging.getLogger("synapse.haproxy.managed")
T = TypeVar("T")


def socket_paths(settings: Settings) -> list[Path]:
    """The master socket and the unix admin sockets HAProxy binds."""
    paths = [Path(path) for path in (*settings.runtime_sockets, *settings.shared_sockets)]
    return ([settings.master_socket] if settings.master_socket else []) + paths


def missing_sockets(settings: Settings) -> list[str]:
    """Those of HAProxy's sockets whose file is gone (none while it runs, even mid-reload:
    HAProxy binds a unix socket under a temporary name and renames it into place)."""
    return [str(path) for path in socket_paths(settings) if not os.path.lexists(path)]


def make_dirs(paths: Iterable[Path]) -> None:
    """Create the missing parent directories of ``paths`` (HAProxy cannot bind or write
    there otherwise), each said once: it was removed, or never there. And take away an
    empty directory standing at one of ``paths`` (``clear_dir``)."""
    paths = list(paths)
    for path in paths:
        clear_dir(path)
    for parent in sorted({path.parent for path in paths}):
        if parent.is_dir():
            continue
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:  # (HAProxy's start then says what it cannot bind)
            event(log, "haproxy_dir_not_created", level=logging.ERROR, path=str(parent),
                  error=str(err))  # fmt: skip
            continue
        event(log, "haproxy_dir_created", level=logging.WARNING, path=str(parent),
              detail="missing (a tmpfs emptied by a reboot, or removed while synapse "
              "ran): made for HAProxy")  # fmt: skip


def clear_dir(path: Path) -> None:
    """An empty directory where HAProxy binds a socket or writes its pid file goes: HAProxy
    cannot replace it ("error when trying to preserve previous UNIX socket (Operation not
    permitted)", "Cannot create pidfile") and no start ever succeeds. A bind mount of the
    socket into a container started before synapse after a reboot makes one (docker creates
    a missing source as a directory). One with files in it is not ours to remove: said."""
    if path.is_symlink() or not path.is_dir():
        return
    try:
        path.rmdir()
    except OSError as err:
        # (EBUSY: a mount point, e.g. synapse's container bind-mounts a missing socket file)
        fix = (
            "a mount point: mount the socket's directory, not the socket"
            if err.errno == errno.EBUSY
            else "remove it"
        )
        event(log, "haproxy_path_is_a_directory", level=logging.ERROR, path=str(path),
              error=str(err), detail=f"HAProxy cannot bind or write there: {fix}")  # fmt: skip
        return
    event(log, "haproxy_path_cleared", level=logging.WARNING, path=str(path),
          detail="an empty directory stood where HAProxy binds a socket or writes its pid "
          "file (a container's bind mount made before the socket?): removed; a container "
          "that mounted it still sees that empty directory until it is restarted")  # fmt: skip


async def finish(task: asyncio.Task[T]) -> T:
    """``task``'s result; when the caller is cancelled (synapse stops), ``task`` still runs to
    its end (its own timeouts bound it: started, the old master retired; or failed, the old
    one kept) and the cancellation is raised then."""
    cancelled = False
    while not task.done():
        try:
            await asyncio.wait({task})
        except asyncio.CancelledError:
            cancelled = True  # (again: still waited for, a replacement cut short is worse)
    if cancelled:
        if not task.cancelled():
            task.exception()  # (retrieved: a failed start was logged, the old master kept)
        raise asyncio.CancelledError
    return task.result()


@dataclass
class Old:
    """A replaced master: its pid, and what synapse had of it (none of it when adopted)."""

    pid: int
    proc: subprocess.Popen[bytes] | None = None  # our child: reaped once it exits
    relay: asyncio.Task[None] | None = None  # (our child) its output, relayed to our log
    pipe: asyncio.ReadTransport | None = None
    began: float = 0.0  # (monotonic) when it was told to stop


class Retiring:
    """Replaced masters, soft-stopped, until they exit: then reaped and logged."""

    def __init__(self) -> None:
        self._waits: dict[int, tuple[Old, asyncio.Task[None]]] = {}

    def pids(self) -> frozenset[int]:
        return frozenset(self._waits)

    def retire_all(self, olds: Iterable[Old], reason: str) -> None:
        for old in olds:
            self.retire(old, reason)

    def retire(self, old: Old, reason: str) -> None:
        old.began = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            os.kill(old.pid, signal.SIGUSR1)
        self._waits[old.pid] = (old, asyncio.create_task(self._wait(old, reason)))

    async def _wait(self, old: Old, reason: str) -> None:
        await wait_pid_exit(old.pid)
        await self._ended(old, "soft", reason)

    async def _ended(self, old: Old, how: str, reason: str) -> None:
        self._waits.pop(old.pid, None)
        if old.proc is not None:
            reap(old.proc)
        await close_relay(old.relay, old.pipe)
        level = logging.INFO if how == "soft" else logging.WARNING  # (else some were cut)
        event(log, "haproxy_stopped", level=level, master_pid=old.pid, how=how,
              took_s=round(time.monotonic() - old.began, 2), reason=reason)  # fmt: skip

    async def stop(self, grace: float, reason: str) -> None:
        """synapse stops HAProxy: what still runs of them gets the rest of a stop (SIGTERM
        once ``grace`` is over), with the current master."""
        waits, self._waits = list(self._waits.values()), {}
        for _old, task in waits:
            await cancel_and_wait(task)

        async def one(old: Old) -> None:
            await self._ended(old, await end_master(old.pid, old.proc is not None, grace), reason)

        await asyncio.gather(*(one(old) for old, _task in waits))

    async def release(self) -> None:
        """synapse exits and leaves HAProxy running: they end on their own (soft-stopped)."""
        waits, self._waits = list(self._waits.values()), {}
        for old, task in waits:
            await cancel_and_wait(task)
            await close_relay(old.relay, old.pipe, drain=False)
