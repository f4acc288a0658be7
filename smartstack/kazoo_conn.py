"""kazoo's connection, writing and reading many packets per turn of its loop.

kazoo's ``ConnectionHandler`` sends one queued request per turn of its select loop and
handles one reply per turn, each with a few selects and small socket calls. Every call
hands the GIL over, and at a cold start the event loop holds it, busy decoding records:
the 1,000 ``addWatch`` requests of a start and their replies took ~0.8 s, mostly waiting.
``BulkConnection`` changes two steps of that loop and nothing else:

- sending: the requests at the queue's head (up to ``MAX_BATCH`` requests or
  ``MAX_BATCH_BYTES``) go in one write. Their xids are given in queue order and they move
  to ``_pending`` in that order once the write is done, as kazoo does for one request: a
  failed write leaves them all queued for the next connection. Auth packets and kazoo's
  test sentinels go alone, through kazoo's own step. One wake-up byte is read per request
  sent, at most as many as the socket pair holds (a byte written later finds the queue
  empty, which kazoo's own step already handles).
- reading: a reply read takes what the socket holds (up to ``READ_CHUNK``) into a buffer
  and every whole reply in it is handled before the loop selects again (the loop selects
  on the socket, which no longer shows what the buffer holds). The buffer is used only
  inside a reply read and emptied at each new connection, so the handshake and SASL read
  exactly as kazoo does.

It also pings twice as often as kazoo (``PING_SPLIT``), keeping kazoo's bound on declaring
the connection dead (``UnansweredPings``), and keeps the session timeout the server
granted (``granted_ms``: kazoo uses it for its timeouts but keeps only the one asked for).

This overrides kazoo internals (``_send_request``, ``_read_socket``, ``_read``,
``_connect``, ``ping_outstanding``, ``_invoke``, ``_expand_client_hosts``: a handshake waits at most
HANDSHAKE_TIMEOUT_CAP_S, and a third of the session or less), like
smartstack.zk_persistent; tests/integration pin the order of replies and events, and the
behaviour across a dropped connection, against a real ZooKeeper.
"""

from __future__ import annotations

import logging
import random
import socket
import ssl
import time
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import ConnectionDropped
from kazoo.protocol.connection import (
    _CONNECTION_DROP,
    _SESSION_EXPIRED,
    CLOSE_RESPONSE,
    STOP_CONNECTING,
    ConnectionHandler,
)
from kazoo.protocol.serialization import Auth, Connect, int_struct
from kazoo.retry import ForceRetryError

from smartstack import zk_names
from smartstack.logs import event
from smartstack.zk_multiread import MULTI_READ, Outgrown

MAX_BATCH = 256
# kazoo waits for the answer to its session handshake for the session timeout divided by
# the hosts (60 s with one host and a 60 s session). A server that accepted the connection
# but never answers (seen after a restart, while it answered `srvr`) would hold the
# reconnection that long; giving up sooner tries again while the session still lives.
HANDSHAKE_TIMEOUT_CAP_S = 10.0
# And at most this share of the session per address: kazoo divides the session by the hosts
# as configured, so one name resolving to a silent address and a live one waited the whole
# session on the silent one (measured: a 10 s session, the live connection cut 8 times,
# the instance out 3 times, 45 s in all). With a third, a retry that lands on the silent
# address still has time for the live one.
HANDSHAKE_SESSION_SHARE = 3
MAX_BATCH_BYTES = 256 * 1024
READ_CHUNK = 64 * 1024
# kazoo pings after a third of the session without a request, so the server may have heard
# nothing for that third when a stall begins: a stall of 2/3 of the session expired it
# (a 10 s session, 60 ms away: an 8 s stall expired 2 of 12 sessions, a 9 s one 9 of 9).
# Pinging every sixth rides out a stall of ~5/6 of it; the cost is twice the pings (an
# idle nerve: 0.37 -> 0.67 packets/s at ZooKeeper with a 10 s session).
PING_SPLIT = 2
MIN_PING_PERIOD_MS = 500.0  # no faster than this, unless kazoo's own period is shorter
# kazoo drops the connection when a ping is unanswered for one period (a third of the
# session): the server last heard from at most 2/3 of the session before. With pings at a
# sixth, three unanswered in a row keep that bound (and a single late reply gets half the
# session, not a third: a far link flaps no more than before).
PINGS_UNANSWERED_TOLERATED = 2
# A server that accepts the TCP connection and closes it before answering the session
# handshake is refusing it: over its per-client-IP limit (maxClientCnxns, 60 by default:
# many sidecars behind one NAT address), not serving (no quorum), or refusing this
# session. kazoo says "socket connection broken" (once an outage) and the client retries
# for ever; this many in a row are named once (zk_handshake_closed), with the likely causes.
HANDSHAKE_CLOSED_SAY = 3
# ... over this many seconds at least: an ensemble's leader election closes every client's
# handshakes for a moment (review s36 cr-looks: 3 in a row within 0.1-0.2 s of a leader's
# loss, the warning from each of 6 clients at each of 3 leader changes).
HANDSHAKE_CLOSED_FOR = 10.0


class UnansweredPings:
    """kazoo's ``ping_outstanding`` event, counting. kazoo sets it when it sends a ping,
    clears it on a ping's reply, and drops the connection when its loop wakes for nothing
    with it set: here that is only once more than ``tolerated`` pings in a row went
    unanswered. Used by the connection's own thread only."""

    def __init__(self, tolerated: int = PINGS_UNANSWERED_TOLERATED) -> None:
        self.tolerated = tolerated
        self.unanswered = 0

    def set(self) -> None:
        self.unanswered += 1

    def clear(self) -> None:
        self.unanswered = 0

    def is_set(self) -> bool:
        return self.unanswered > self.tolerated


def ping_read_timeout(read_timeout_ms: float) -> float:
    """The read timeout handed to kazoo's loop, which pings every half of it: kazoo's own
    (2/3 of the session) divided by PING_SPLIT, not under 2 x MIN_PING_PERIOD_MS."""
    return max(read_timeout_ms / PING_SPLIT, min(read_timeout_ms, 2 * MIN_PING_PERIOD_MS))


class BulkConnection(ConnectionHandler):  # type: ignore[misc]
    """kazoo's ConnectionHandler sending queued requests and handling buffered replies
    in bulk (see the module docstring)."""

    _closed_handshakes = 0  # handshakes in a row the server closed (HANDSHAKE_CLOSED_SAY)
    _closed_since = 0.0  # (monotonic) the first of them
    _closed_said = False  # zk_handshake_closed said for this streak
    connections = 0  # connections made: a multi-read is marked with the one it left on

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rbuf = bytearray()
        self._buffering = False
        self._addresses = 0  # resolved addresses of the current connect cycle
        self.ping_outstanding = UnansweredPings()
        self._read_timeout_ms = 0.0  # kazoo's own, of the current connection (_connect)
        self.granted_ms: int | None = None  # the session timeout of the last handshake

    # --- sending ------------------------------------------------------------------

    def _send_request(self, read_timeout: float, connect_timeout: float) -> None:
        queue = self.client._queue
        if queue and queue[0][0] is _LEAVE:
            queue.popleft()
            raise ConnectionDropped("closed without closeSession: the session is left to expire")
        while queue and _outgrown(queue[0][0]):  # (its wake-up byte: a pass on an empty queue)
            queue.popleft()[1].set_exception(Outgrown())
        if not queue or _alone(queue[0][0]):
            super()._send_request(read_timeout, connect_timeout)
            return
        packets: list[bytes] = []
        batch: list[tuple[Any, Any, int]] = []
        size, xid = 0, self._xid
        debug = self.logger.isEnabledFor(logging.DEBUG)
        # By index, never by iterator: other threads append meanwhile (a deque iterator
        # then raises "deque mutated during iteration", which killed the connection in a
        # loaded fleet run); only this thread pops, so the first items stay put.
        for i in range(min(len(queue), MAX_BATCH)):
            request, async_object = queue[i]
            if _alone(request) or (batch and size >= MAX_BATCH_BYTES):
                break
            multi_read = request.type == MULTI_READ
            if multi_read and request.stale():
                break  # (failed at the head of the next pass)
            xid = (xid % 2147483647) + 1
            body = int_struct.pack(xid) + int_struct.pack(request.type) + request.serialize()
            packets.append(int_struct.pack(len(body)) + body)
            size += len(packets[-1])
            batch.append((request, async_object, xid))
            if multi_read:
                request.sent_on = self.connections  # (a drop's cause: zk_multiread)
            if debug:
                self.logger.debug("Sending request(xid=%s): %s", xid, request)
        self._write(b"".join(packets), connect_timeout)  # raises: nothing was dequeued
        self._xid = xid
        pending = self.client._pending
        for entry in batch:
            queue.popleft()
            pending.append(entry)
        self._read_sock.recv(len(batch))  # ≥ 1 byte is there: the loop saw it readable

    def _connect_loop(self, retry: Any) -> Any:
        """kazoo's connect cycle; a stopped client (``leave``) tries no other address."""
        try:
            return super()._connect_loop(retry)
        except ForceRetryError:
            if self.client._stopped.is_set():
                return STOP_CONNECTING
            raise

    # --- reading ------------------------------------------------------------------

    def _connect(self, *args: Any) -> Any:
        self._rbuf = bytearray()  # never a byte of the last connection's stream
        self.connections += 1
        read_timeout, connect_timeout = super()._connect(*args)
        # The loop pings every half of the read timeout it gets; a reply's read keeps
        # kazoo's own timeout (``_read_socket``).
        self._read_timeout_ms = read_timeout
        return ping_read_timeout(read_timeout), connect_timeout

    def _expand_client_hosts(self) -> list[tuple[str, str, int]]:
        """kazoo's (host, address, port) list of a connect cycle, its addresses counted; a
        name that stops resolving keeps its last addresses (``zk_names``)."""
        host_ports: list[tuple[str, str, int]] = []
        hosts = [(host.strip(), port) for host, port in self.client.hosts]
        zk_names.begin_all(hosts)  # (together, one deadline: not 1 s per name in turn)
        deadline = time.monotonic() + zk_names.LOOKUP_WAIT_S
        for host, port in hosts:
            try:
                found = zk_names.addresses(host, port, deadline)
            except socket.gaierror as exc:  # (never resolved: skipped, as kazoo does)
                self.logger.warning("Cannot resolve %s: %s", host, exc)
                continue
            host_ports += [(host, address, p) for address, p in found]
        if self.client.randomize_hosts:
            random.shuffle(host_ports)
        self._addresses = len(host_ports)
        return host_ports

    def _invoke(self, timeout: float, *args: Any, **kwargs: Any) -> Any:
        """The handshake's (and auth's) exchange, waiting at most HANDSHAKE_TIMEOUT_CAP_S and
        the session's share of each resolved address (a third at most) when there are several."""
        session = self.client._session_timeout / 1000.0
        # One address: nothing else to try, so no share (a slow handshake, e.g. a loaded
        # member's fsync, of 4 s never completed under a 3.3 s share: 6 attempts in 25 s).
        share = (
            session / max(HANDSHAKE_SESSION_SHARE, self._addresses)
            if self._addresses > 1
            else session
        )
        handshake = bool(args) and isinstance(args[0], Connect)
        try:
            result = super()._invoke(min(timeout, HANDSHAKE_TIMEOUT_CAP_S, share), *args, **kwargs)
        except (ConnectionDropped, OSError) as exc:
            if handshake and not isinstance(exc, TimeoutError):  # closed, not slow
                self._handshake_closed()
            raise
        if handshake:
            self._closed_handshakes, self._closed_said = 0, False
        if handshake and result[0].time_out > 0:
            # The server's bounds (min/maxSessionTimeout) apply, not what was asked: kazoo
            # bases its timeouts on this but keeps only ``_session_timeout``, the asked.
            self.granted_ms = result[0].time_out
        return result

    def _handshake_closed(self) -> None:
        if not self._closed_handshakes:
            self._closed_since = time.monotonic()
        self._closed_handshakes += 1
        if self._closed_said or self._closed_handshakes < HANDSHAKE_CLOSED_SAY:
            return
        if time.monotonic() - self._closed_since >= HANDSHAKE_CLOSED_FOR:
            self._closed_said = True
            hosts = ",".join(f"{host}:{port}" for host, port in self.client.hosts)
            event(logging.getLogger("smartstack.zookeeper"), "zk_handshake_closed",
                  logging.WARNING, hosts=hosts, attempts=self._closed_handshakes,
                  for_s=round(time.monotonic() - self._closed_since, 1),
                  causes="its per-IP connection limit (maxClientCnxns), no quorum, "
                  "or a session it refuses: the server's log says which")  # fmt: skip

    def _read_socket(self, read_timeout: float) -> Any:
        read_timeout = self._read_timeout_ms / 1000.0  # kazoo's, not the ping's (_connect)
        self._buffering = True
        try:
            while True:
                response = super()._read_socket(read_timeout)
                if response == CLOSE_RESPONSE:
                    return response
                if not (self._whole_reply_buffered() or self._tls_pending()):
                    return response
        finally:
            self._buffering = False

    def _tls_pending(self) -> bool:
        """An SSL socket may hold decrypted bytes its file descriptor no longer shows:
        select would not wake for them (a reply would wait for the next ping)."""
        sock = self._socket
        return hasattr(sock, "pending") and sock.pending() > 0

    def _whole_reply_buffered(self) -> bool:
        buf = self._rbuf
        return len(buf) >= 4 and len(buf) >= 4 + int_struct.unpack_from(buf)[0]

    def _read(self, length: int, timeout: float) -> bytes:
        buf = self._rbuf
        if not self._buffering and not buf:
            return super()._read(length, timeout)  # type: ignore[no-any-return]
        while len(buf) < length:
            self._fill(timeout)
        out = bytes(buf[:length])
        del buf[:length]
        return out

    def _fill(self, timeout: float) -> None:
        """One receive into the buffer (kazoo's ``_read``, taking all there is)."""
        sock = self._socket
        with self._socket_error_handling():
            if not self._tls_pending() and not self.handler.select([sock], [], [], timeout)[0]:
                raise self.handler.timeout_exception("socket time-out during read")
            try:
                chunk = sock.recv(READ_CHUNK)
            except ssl.SSLError as exc:
                if exc.errno in (ssl.SSL_ERROR_WANT_READ, ssl.SSL_ERROR_WANT_WRITE):
                    return
                raise
            if not chunk:
                raise ConnectionDropped("socket connection broken")
            self._rbuf += chunk


def _alone(request: Any) -> bool:
    """Requests kazoo's own step must send: its test sentinels and auth packets. (An
    ``add_auth`` mid-stream is answered ahead of earlier replies and breaks kazoo's xid
    matching, with or without batching: smartstack sends digest credentials in the
    connect handshake and never calls it.)"""
    if request is _LEAVE or request is _SESSION_EXPIRED or request is _CONNECTION_DROP:
        return True  # (_LEAVE: the requests before it go, the next pass drops the connection)
    return bool(request.type == Auth.type)


def _outgrown(request: Any) -> bool:
    """A multi-read queued before a drop shrank the size below its own (zk_multiread):
    sent, it would drop this connection too."""
    return not _alone(request) and request.type == MULTI_READ and request.stale()


_LEAVE = object()  # queued by ``leave``: drop the connection here, sending nothing


def leave(client: KazooClient) -> None:
    """Stop a client *without* closing its session (kazoo's ``stop`` sends closeSession,
    which deletes its ephemeral nodes at once): the connection is dropped as a crash
    drops it, the server keeps the session (and its nodes) until its timeout, and a
    successor finds them as a previous run's (nerve's restart stop, SIGUSR2). Blocks
    until kazoo's connection thread has ended, as ``stop`` does."""
    if client._stopped.is_set():
        return
    client._stopped.set()  # no reconnection from now on (kazoo's loop and retries look)
    client._queue.append((_LEAVE, None))
    try:
        client._connection._write_sock.send(b"\0")
    finally:
        client._safe_close()


def install(client: KazooClient, sasl_options: dict[str, Any] | None) -> None:
    """Give a new (not started) client a BulkConnection made as kazoo makes its own."""
    client._connection = BulkConnection(
        client, client._conn_retry.copy(), logger=client.logger, sasl_options=sasl_options
    )
