"""HAProxy's TCP listening sockets, held by synapse too: an HAProxy crash refuses nothing.

``kill -9`` of HAProxy (or any crash) closes its listeners, and until synapse has started
it again (~30 ms) every connection to a frontend is refused. A socket lives while any
process holds it, so synapse keeps a copy of each TCP listening socket: HAProxy hands
them over on its admin socket (``expose-fd listeners``, the ``_getsocks`` command of its
own seamless reload). While HAProxy is down, the kernel still completes connections into
the sockets' backlogs; the next HAProxy is started with ``-x <synapse's socket>``, where
synapse answers ``_getsocks`` (synapse.haproxy.getsocks) with the same sockets, and HAProxy
takes them instead of binding new ones: what came in meanwhile is served, late, not refused.

Only TCP sockets that listen are kept (never the admin socket: a dead HAProxy's admin
socket must refuse, so that synapse sees it is dead). After every start, reload and
adoption the copies are replaced by HAProxy's current set: a port the config dropped is
closed by both. When HAProxy stays down (a crash loop backing off, a failed start),
synapse closes its copies: a client then is refused at once instead of waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import socket
import struct
from pathlib import Path

from smartstack.logs import event
from synapse.haproxy.getsocks import Held, TransferError, receive, send

log = logging.getLogger("synapse.haproxy.managed")
MAX_UNIX_PATH = 107  # bytes HAProxy copies of a ``-x`` path (sun_path, NUL-terminated)
FD_HEADROOM = 256  # open files synapse keeps free for itself beyond the held sockets
PEERCRED = struct.Struct("3i")  # SO_PEERCRED: pid, uid, gid


def _open_files() -> tuple[int, int]:
    """(open now, the soft limit) of this process's file descriptors."""
    return len(os.listdir("/proc/self/fd")), resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _answer(conn: socket.socket, held: list[Held]) -> None:
    """One ``_getsocks`` answered, in a thread that owns ``conn`` (closed here, never
    under it). Only a process of synapse's own user may take the sockets."""
    with conn:
        conn.setblocking(True)
        _pid, uid, _gid = PEERCRED.unpack(
            conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, PEERCRED.size)
        )
        if uid not in (os.geteuid(), 0):
            raise TransferError(f"refused: the handover socket's peer runs as uid {uid}")
        send(conn, held)


def _dup(sock: socket.socket) -> socket.socket:
    """A copy of ``sock`` that leaves its flags alone. ``socket.dup()`` makes the socket
    blocking, and O_NONBLOCK belongs to what every holder shares: a worker of the HAProxy
    still running (a replaced master's) then waited in accept() for a connection the new
    one took, and its soft stop hung until HAProxy's watchdog killed it (3 s, its
    connections reset)."""
    return socket.socket(sock.family, sock.type, sock.proto, fileno=os.dup(sock.fileno()))


class Handover:
    """A unix socket where the HAProxy about to start takes the held sockets (``-x``).
    It answers with duplicates of them, its own until ``close()``: the keeper may drop
    its copies meanwhile without closing a descriptor a send still uses."""

    def __init__(self, path: Path, server: socket.socket, held: list[Held]) -> None:
        self.path = path
        self._server = server
        self._held = [Held(_dup(h.sock), h.info) for h in held]
        self._conn: socket.socket | None = None
        self._task = asyncio.create_task(self._serve())

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        self._server.setblocking(False)
        while True:  # (one request from the new master; more do no harm)
            self._conn, _ = await loop.sock_accept(self._server)
            answer = asyncio.ensure_future(asyncio.to_thread(_answer, self._conn, self._held))
            try:
                await asyncio.shield(answer)
            except asyncio.CancelledError:
                with contextlib.suppress(OSError):
                    self._conn.shutdown(socket.SHUT_RDWR)  # wakes the thread at once
                with contextlib.suppress(Exception):
                    await answer
                raise
            except (OSError, TransferError) as exc:
                event(log, "haproxy_listeners_not_handed_over", level=logging.WARNING,
                      error=str(exc)[:300])  # fmt: skip
            finally:
                self._conn = None

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._server.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        for h in self._held:
            h.sock.close()


class ListenerKeeper:
    """synapse's copies of its HAProxy's TCP listening sockets."""

    def __init__(self, path: Path, admin_socket: str) -> None:
        self.path = path  # where a new HAProxy asks for them (``haproxy -x``)
        self.admin_socket = admin_socket  # where HAProxy hands them over
        self.held: list[Held] = []
        self._warned = False

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return sorted(h.address for h in self.held)

    def inodes(self) -> set[str]:
        """The held sockets' inodes (synapse.haproxy.ports: HAProxy's own, not a clash)."""
        return {str(os.fstat(h.sock.fileno()).st_ino) for h in self.held}

    async def hold(self) -> None:
        """Take copies of the running HAProxy's listening sockets instead of the last ones
        (a port its new config dropped is let go)."""
        try:
            held = await asyncio.to_thread(receive, self.admin_socket)
            opened, limit = _open_files()
            if opened + FD_HEADROOM > limit:
                for h in held:
                    h.sock.close()
                raise TransferError(
                    f"{len(held)} listening sockets would leave synapse {limit - opened} of its "
                    f"{limit} open files (ulimit -n): raise the limit"
                )
        except Exception as exc:  # (never fails the start or reload that asked)
            self.drop()
            level = logging.INFO if self._warned else logging.WARNING
            self._warned = True
            event(log, "haproxy_listeners_not_held", level=level, error=str(exc)[:300],
                  hint="the admin socket needs 'expose-fd listeners' (else an HAProxy crash "
                  "refuses connections until it is back)")  # fmt: skip
            return
        self._replace(held)

    def keep(self, held: list[Held]) -> None:
        """Copies taken another way (``synapse.haproxy.taken``), to hand over next."""
        self._replace(held)

    def drop(self) -> None:
        """Close the copies: HAProxy is not coming back at once (refuse, do not queue), or
        it runs on without synapse (it holds its own)."""
        if self.held:
            count = len(self.held)
            self._replace([])
            event(log, "haproxy_listeners_released", sockets=count)

    def _replace(self, held: list[Held]) -> None:
        old, self.held = self.held, held
        for h in old:
            h.sock.close()

    def handover(self) -> Handover | None:
        """Serve the held sockets to the HAProxy about to start (None: none held)."""
        if not self.held:
            return None
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            if len(os.fsencode(self.path)) > MAX_UNIX_PATH:
                raise OSError(f"{self.path}: longer than {MAX_UNIX_PATH} bytes")
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            server.bind(str(self.path))
            os.chmod(self.path, 0o600)  # (and _answer checks who connected)
            server.listen(4)
        except OSError as exc:
            server.close()
            event(log, "haproxy_listeners_not_handed_over", level=logging.WARNING,
                  error=str(exc)[:300])  # fmt: skip
            self.drop()
            return None
        return Handover(self.path, server, self.held)
