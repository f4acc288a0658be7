"""HAProxy's TCP listening sockets, held by synapse too: an HAProxy crash refuses nothing.

``kill -9`` of HAProxy (or any crash) closes its listeners, and until synapse has started
it again (~30 ms) every connection to a frontend is refused. A socket lives while any
process holds it, so synapse keeps a copy of each TCP listening socket: HAProxy hands
them over on its admin socket (``expose-fd listeners``, the ``_getsocks`` command of its
own seamless reload). While HAProxy is down, the kernel still completes connections into
the sockets' backlogs; the next HAProxy is started with ``-x <synapse's socket>``, where
synapse answers ``_getsocks`` with the same sockets, and HAProxy takes them instead of
binding new ones: the connections that came in meanwhile are served, late, not refused.

Only TCP sockets that listen are kept (never the admin socket: a dead HAProxy's admin
socket must refuse, so that synapse sees it is dead). After every start, reload and
adoption the copies are replaced by HAProxy's current set: a port the config dropped is
closed by both. When HAProxy stays down (a crash loop backing off, a failed start),
synapse closes its copies: a client then is refused at once instead of waiting.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import logging
import os
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

from smartstack.logs import event
from smartstack.tasks import cancel_and_wait

log = logging.getLogger("synapse.haproxy.managed")

MAX_SEND_FD = 253  # HAProxy's batch: it waits for an acknowledgement after each full one
COUNT = struct.Struct("=i")  # the number of sockets, in HAProxy's native int
# One socket's description: namespace and interface names (a length byte each, then the
# name) and 4 bytes of options HAProxy no longer reads.
RECV_SIZE = MAX_SEND_FD * (1 + 255 + 1 + 16 + 4)
TIMEOUT = 2.0


class TransferError(Exception):
    """HAProxy did not hand over its sockets (no ``expose-fd listeners``, no answer)."""


@dataclass
class Held:
    """One listening socket and HAProxy's description of it (replayed as received)."""

    sock: socket.socket
    info: bytes

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.sock.getsockname()[:2]
        return str(host), int(port)


def _descriptions(data: bytes, count: int) -> list[bytes]:
    """Split HAProxy's per-socket descriptions (namespace, interface, options)."""
    out, offset = [], 0
    for _ in range(count):
        start = offset
        for _name in range(2):  # namespace, interface
            if offset >= len(data):
                raise TransferError("HAProxy's socket descriptions are cut short")
            offset += 1 + data[offset]
        offset += 4
        if offset > len(data):
            raise TransferError("HAProxy's socket descriptions are cut short")
        out.append(data[start:offset])
    return out


def _short(data: bytes, count: int) -> bool:
    """``data`` does not yet hold ``count`` descriptions."""
    try:
        _descriptions(data, count)
    except TransferError:
        return True
    return False


def _keep(fd: int) -> socket.socket | None:
    """The socket of ``fd`` when it is a listening TCP socket; else ``fd`` is closed."""
    sock = socket.socket(fileno=fd)
    try:
        listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
        tcp = sock.family in (socket.AF_INET, socket.AF_INET6) and sock.type == socket.SOCK_STREAM
        if tcp and listening:
            sock.set_inheritable(False)
            return sock
    except OSError:
        pass
    sock.close()
    return None


def receive(admin_socket: str, timeout: float = TIMEOUT) -> list[Held]:
    """Ask HAProxy for its listening sockets on ``admin_socket`` (blocking); the TCP
    listening ones are kept, any other is closed."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(timeout)
            conn.connect(admin_socket)
            received = transfer(conn)
    except OSError as exc:
        raise TransferError(f"_getsocks on {admin_socket}: {exc}") from exc
    held = []
    for fd, info in received:
        sock = _keep(fd)
        if sock is not None:
            held.append(Held(sock, info))
    return held


def transfer(conn: socket.socket) -> list[tuple[int, bytes]]:
    """The client side of ``_getsocks`` on a connected ``conn`` (as ``haproxy -x``): each
    file descriptor received with its description. Nothing is left open on an error."""
    fds: list[int] = []
    data = b""
    try:
        conn.sendall(b"_getsocks\n")
        head = conn.recv(COUNT.size, socket.MSG_WAITALL)
        if len(head) != COUNT.size:
            raise TransferError(f"HAProxy answered {head!r} to _getsocks")
        (count,) = COUNT.unpack(head)
        if not 0 <= count <= 65536:  # text (a refusal), not a count
            raise TransferError(f"HAProxy refused _getsocks: {(head + conn.recv(200))!r}")
        while len(fds) < count or _short(data, count):
            chunk, got, flags, _addr = socket.recv_fds(conn, RECV_SIZE, MAX_SEND_FD)
            fds.extend(got)
            if flags & socket.MSG_CTRUNC:
                raise TransferError(
                    "sockets lost in transfer: synapse's open-files limit (ulimit -n) is too "
                    "low for one descriptor per frontend port"
                )
            if not chunk and not got:
                raise TransferError(f"HAProxy sent {len(fds)} of {count} sockets")
            data += chunk
            if got:  # acknowledged as HAProxy's own client does (it waits after full batches)
                try:
                    conn.sendall(COUNT.pack(len(fds)))
                except OSError:
                    if len(fds) < count:
                        raise  # (at the end, the sender may be gone already)
        return list(zip(fds, _descriptions(data, len(fds)), strict=True))
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise


def send(conn: socket.socket, held: list[Held], timeout: float = TIMEOUT) -> None:
    """Answer one ``_getsocks`` on ``conn`` with ``held`` (what HAProxy's CLI does)."""
    conn.settimeout(timeout)
    request = b""
    while not request.endswith(b"\n"):
        chunk = conn.recv(64)
        if not chunk or len(request) > 64:
            raise TransferError(f"not a _getsocks request: {request!r}")
        request += chunk
    if request.strip() != b"_getsocks":
        raise TransferError(f"not a _getsocks request: {request!r}")
    conn.sendall(COUNT.pack(len(held)))
    for start in range(0, len(held), MAX_SEND_FD):
        batch = held[start : start + MAX_SEND_FD]
        fds = array.array("i", [h.sock.fileno() for h in batch])
        data = b"".join(h.info for h in batch)
        conn.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
        if len(batch) == MAX_SEND_FD:  # as HAProxy: the client may take more when it says so
            conn.recv(COUNT.size, socket.MSG_WAITALL)


class Handover:
    """A unix socket where the HAProxy about to start takes the held sockets (``-x``)."""

    def __init__(self, keeper: ListenerKeeper, server: socket.socket) -> None:
        self.path = keeper.path
        self._keeper, self._server = keeper, server
        self._task = asyncio.create_task(self._serve())

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        self._server.setblocking(False)
        while True:  # (one request from the new master; more do no harm)
            conn, _ = await loop.sock_accept(self._server)
            with conn:
                conn.setblocking(True)
                try:
                    await asyncio.to_thread(send, conn, list(self._keeper.held))
                except (OSError, TransferError) as exc:
                    event(log, "haproxy_listeners_not_handed_over", level=logging.WARNING,
                          error=str(exc)[:300])  # fmt: skip

    async def close(self) -> None:
        await cancel_and_wait(self._task)
        self._server.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


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
        except TransferError as exc:
            self.drop()
            level = logging.INFO if self._warned else logging.WARNING
            self._warned = True
            event(log, "haproxy_listeners_not_held", level=level, error=str(exc)[:300],
                  hint="the admin socket needs 'expose-fd listeners' (else an HAProxy crash "
                  "refuses connections until it is back)")  # fmt: skip
            return
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
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            server.bind(str(self.path))
            os.chmod(self.path, 0o600)
            server.listen(4)
        except OSError as exc:
            server.close()
            event(log, "haproxy_listeners_not_handed_over", level=logging.WARNING,
                  error=str(exc)[:300])  # fmt: skip
            self.drop()
            return None
        return Handover(self, server)
