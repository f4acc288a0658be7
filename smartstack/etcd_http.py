"""JSON over HTTP/1.1 to etcd's gateway (``/v3/...``), on asyncio streams.

h11 (a small, well-kept HTTP/1.1 state machine; ~0.5 MB) parses the responses, chunked
or not; aiohttp would cost ~10 MB of RSS in a sidecar that makes a call a minute. A unary
call is one short connection: calls are rare (a listing per watcher, a check every two
minutes), so nothing keeps an idle socket open and nothing is reused after a failure. The
calls made every few seconds (a lease keep-alive, a watched member's status probe) go on a
``KeptLine``, one connection kept from one call to the next: one round trip each instead of
two (a TCP handshake first; a lost SYN costs a second more), which on a 300 ms link with loss
decided whether a keep-alive came back within its time. A
watch is one long response on a connection of its own, one JSON message per line, with TCP
keepalive so that a peer gone silent (a host lost, not a process) is noticed in ~25 s.
"""

from __future__ import annotations

import json
import os
import ssl
from collections.abc import AsyncIterator
from typing import Any, NamedTuple

import h11

from smartstack.http_exchange import Exchange as BaseExchange
from smartstack.registry_auth import EtcdTLS, TLSFileError

# A watch message longer than this is refused (etcd's own limit on a request is 1.5 MB by
# default; a reply of many events stays well below this).
MAX_LINE = 64 * 1024 * 1024
# gRPC codes that say the member failed the call, not that etcd refused it: Cancelled (the
# gateway's own connection to its member closing as etcd stops: "grpc: the client connection
# is closing", streamed into an open watch), Unknown, DeadlineExceeded, ResourceExhausted,
# Internal, Unavailable (the gateway answers them with HTTP 499, 500, 504, 429, 500, 503).
# The gRPC transport moves on for most of them too.
MEMBER_FAILURE_CODES = frozenset({1, 2, 4, 8, 13, 14})
# etcd's NOSPACE alarm (its quota-backend-bytes full: ResourceExhausted, HTTP 429) refuses
# writes on every member alike: etcd's answer, not a member failing (no failover to log).
NO_SPACE = "database space exceeded"


class HttpStatusError(Exception):
    """The gateway answered with an error: ``status`` (HTTP), ``code`` (gRPC's, from the
    body when it has one) and etcd's message."""

    def __init__(self, status: int, body: Any) -> None:
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):  # a streamed error: {"error": {"grpc_code": ..}}
            body, error = error, error.get("message")
        detail = body if isinstance(body, dict) else {}
        self.status = status
        self.code = detail.get("code", detail.get("grpc_code"))
        self.message = str(detail.get("message") or error or body)[:300]
        super().__init__(f"etcd answered HTTP {status}: {self.message}")

    @property
    def member_failed(self) -> bool:
        """The member (or a proxy before it) failed the call: another member may serve it.
        A 4xx other than 429 is etcd's answer (lease not found, permission denied, ...), as
        is the NOSPACE alarm."""
        if NO_SPACE in self.message:
            return False
        return self.status >= 500 or self.status == 429 or self.code in MEMBER_FAILURE_CODES


class TLSContexts:
    """An SSL context for ``EtcdTLS``, made again when one of its files changed: a renewed
    certificate is used from the next connection on, as with gRPC. Changed: another inode
    (a file renamed over it), size, mtime or ctime: a renewal may keep the mtime (``cp -p``,
    a file written earlier and renamed), but not the inode and ctime too."""

    def __init__(self, tls: EtcdTLS) -> None:
        self.tls = tls
        self._made: tuple[tuple[int, ...], ssl.SSLContext] | None = None

    def _stamp(self) -> tuple[int, ...]:
        stamp: list[int] = []
        for key in ("ca_cert", "cert_cert", "cert_key"):
            path = getattr(self.tls, key)
            try:
                st = os.stat(path) if path else None
            except OSError as exc:
                raise TLSFileError(f"etcd_tls: {key} {path}: {exc.strerror or exc}") from exc
            if st is not None:
                stamp += (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        return tuple(stamp)

    def context(self) -> ssl.SSLContext:
        stamp = self._stamp()
        if self._made is None or self._made[0] != stamp:
            self.tls.read()  # an empty or half-written file: TLSFileError, not ssl's "PEM lib"
            context = ssl.create_default_context(cafile=self.tls.ca_cert)
            if self.tls.cert_cert and self.tls.cert_key:
                context.load_cert_chain(self.tls.cert_cert, self.tls.cert_key)
            self._made = (stamp, context)
        return self._made[1]


class Exchange(BaseExchange):
    """One POST and its response on one connection."""

    peer = "etcd"

    async def post(self, host: str, path: str, payload: dict, headers: dict[str, str]) -> int:
        """Send the request; the response's status once its head came."""
        body = json.dumps(payload, separators=(",", ":")).encode()
        head = [("Host", host), ("Content-Type", "application/json"), *headers.items()]
        return (await self.request("POST", path, head, body)).status_code

    async def body(self) -> Any:
        data = b"".join([chunk async for chunk in self.chunks()])
        try:
            return json.loads(data) if data else {}
        except ValueError as exc:
            raise ConnectionError(f"etcd sent a body that is not JSON: {data[:120]!r}") from exc

    async def messages(self) -> AsyncIterator[dict]:
        """A streamed body's JSON messages, one per line (a line is searched for its end
        once: a message of many chunks is not copied and scanned again per chunk)."""
        buffered = bytearray()
        async for chunk in self.chunks():
            start = len(buffered)
            buffered += chunk
            end = buffered.find(b"\n", start)
            while end >= 0:
                line, buffered = bytes(buffered[:end]), buffered[end + 1 :]
                if line.strip():
                    yield _message(line)
                end = buffered.find(b"\n")
            if len(buffered) > MAX_LINE:
                raise ConnectionError(f"etcd sent a message line over {MAX_LINE} bytes")
        if buffered.strip():
            yield _message(bytes(buffered))


def _message(line: bytes) -> dict:
    try:
        return json.loads(line)
    except ValueError as exc:
        raise ConnectionError(f"etcd sent a line that is not JSON: {line[:120]!r}") from exc


class Target(NamedTuple):
    """Where a call goes: an endpoint, its TLS (None: clear text) and headers (auth)."""

    host: str
    port: int
    context: ssl.SSLContext | None
    headers: dict[str, str]


async def _posted(target: Target, path: str, payload: dict, stream: bool) -> tuple[Exchange, int]:
    """An exchange whose request went out, and the response's status (closed on failure)."""
    exchange = await Exchange.open(target.host, target.port, target.context)
    try:
        if stream:
            exchange.keepalive()
        return exchange, await exchange.post(target.host, path, payload, target.headers)
    except BaseException:
        await exchange.close()
        raise


async def call(target: Target, path: str, payload: dict) -> dict:
    """One unary call: the reply's JSON, or HttpStatusError."""
    exchange, status = await _posted(target, path, payload, stream=False)
    try:
        body = await exchange.body()
    finally:
        await exchange.close()
    if status != 200:
        raise HttpStatusError(status, body)
    return body


async def open_stream(target: Target, path: str, payload: dict) -> Exchange:
    """A streamed call: its exchange, to read ``messages()`` from; the caller closes it."""
    exchange, status = await _posted(target, path, payload, stream=True)
    if status != 200:
        try:
            raise HttpStatusError(status, await exchange.body())
        finally:
            await exchange.close()
    return exchange


async def first_message(target: Target, path: str, payload: dict) -> dict:
    """A streamed call asked once (a lease keep-alive): its first message, then closed."""
    exchange = await open_stream(target, path, payload)
    messages = exchange.messages()
    try:
        first = await anext(messages, None)
    finally:
        await messages.aclose()
        await exchange.close()
    if first is None:
        raise ConnectionError(f"etcd ended the {path} stream without a word")
    return first


class KeptLine:
    """POSTs on a connection kept from one call to the next (no TCP or TLS handshake per
    call). One call at a time has the kept connection; a call made meanwhile opens one of its
    own, and the first connection back is kept, the other closed."""

    def __init__(self) -> None:
        self._kept: tuple[tuple[str, int, int], Exchange] | None = None

    async def post(self, target: Target, path: str, payload: dict) -> dict:
        """The reply's JSON (a stream's one message: a keep-alive asked once), or
        HttpStatusError."""
        peer = (target.host, target.port, id(target.context))
        kept, self._kept = self._kept, None
        if kept is not None and kept[0] == peer:
            try:
                return await self._once(peer, kept[1], target, path, payload)
            except (ConnectionError, OSError) as exc:
                if isinstance(exc, TimeoutError):
                    raise
                # etcd closed the idle connection meanwhile: a new one, in the same time.
        elif kept is not None:
            await kept[1].close()
        exchange = await Exchange.open(target.host, target.port, target.context)
        return await self._once(peer, exchange, target, path, payload)

    async def _once(
        self, peer: tuple[str, int, int], exchange: Exchange, target: Target, path: str,
        payload: dict,
    ) -> dict:  # fmt: skip
        try:
            status = await exchange.post(target.host, path, payload, target.headers)
            body = await exchange.body()
        except BaseException:
            await exchange.close()  # cut short: aborted
            raise
        http = exchange.http
        if self._kept is None and http.our_state is http.their_state is h11.DONE:
            http.start_next_cycle()
            self._kept = (peer, exchange)
        else:
            await exchange.close()  # etcd said it closes it, or another call's is kept
        if status != 200:
            raise HttpStatusError(status, body)
        return body

    async def close(self) -> None:
        kept, self._kept = self._kept, None
        if kept is not None:
            await kept[1].close()
