"""HAProxy's ``_getsocks``: how listening sockets pass between processes, both sides.

The command of HAProxy's seamless reload (``expose-fd listeners`` on a stats socket; the
client side is ``haproxy -x <socket>``), as HAProxy 2.6 speaks it (src/cli.c ``_getsocks``,
src/sock.c ``sock_get_old_sockets``): the client sends ``_getsocks\n``; the server answers
the number of sockets (a native int), then batches of at most 253 descriptors
(SCM_RIGHTS), each with a description per socket (namespace and interface names, a length
byte each, then the name, then 4 bytes HAProxy no longer reads); after a full batch it
waits for the client's acknowledgement (an int) before the next.
"""

from __future__ import annotations

import array
import os
import socket
import struct
from dataclasses import dataclass

MAX_SEND_FD = 253  # HAProxy's batch: it waits for an acknowledgement after each full one
COUNT = struct.Struct("=i")  # the number of sockets, in HAProxy's native int
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
    try:
        sock = socket.socket(fileno=fd)
    except OSError:
        os.close(fd)
        return None
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
        sock = _keep(fd)  # (never raises: each fd is either kept or closed)
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
        sent = conn.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
        conn.sendall(data[sent:])  # (the descriptors went with the first byte)
        if len(batch) == MAX_SEND_FD:  # as HAProxy: the client may take more when it says so
            conn.recv(COUNT.size, socket.MSG_WAITALL)
