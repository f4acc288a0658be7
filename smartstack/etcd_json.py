"""etcd v3 through its JSON gateway (``/v3/kv/range``, ``/v3/watch``), without gRPC.

A sidecar synapse watching a few services pays ~17 MB of RSS for gRPC, aetcd's protobufs
and a channel's threads (issue 15: ≤ 35 MB). This connection gives its watchers what
``smartstack.etcd.EtcdConnection`` gives them (listings, check fingerprints, prefix
watches, the shared check tick) over HTTP/1.1 (``smartstack.etcd_http``). The price is
one connection per watch (the gateway's HTTP/1.1 carries one watch per request): the
daemon uses it for a connection serving a few services only (``etcd_transport: auto``).

Fail-over: a call that fails to connect, times out or meets a member failure (HTTP 5xx or
429, or gRPC's Unknown, DeadlineExceeded, ResourceExhausted, Internal, Unavailable: a
member without quorum, overloaded, or a proxy before it) moves to the next endpoint and
retries, once per endpoint; etcd's other answers (lease not found, permission denied) are
raised. A watch is its own connection: when it breaks (etcd ends it when its member loses
its leader: ``LEADER_HEADER``), its watcher lists again and watches anew (``rotate`` with
the watch's ``client``, the endpoint turn it was made on, moves on only once for watches
that fail together). Moving on fails every watch made on the endpoint left, as a gRPC
client's stream ends with it; a member that goes silent under the watches is found by a
status probe (``smartstack.etcd_json_probe``). With user auth, the token is asked for on
the first call of an endpoint turn and asked for again, once, when etcd no longer knows it
(or, once auth is enabled, wants the token it did not give while auth was off).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import ssl
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NamedTuple, TypeVar

from smartstack import tcp_connect
from smartstack.etcd_events import (
    REQUIRE_LEADER,
    Endpoints,
    EventQueue,
    Listing,
    WatchCompacted,
    WatchEvent,
    split_endpoint,
)
from smartstack.etcd_http import Exchange, HttpStatusError, Target, TLSContexts, call, open_stream
from smartstack.etcd_json_probe import STATUS_PATH, WatchProbe
from smartstack.etcd_wake import ProbeRefused
from smartstack.logs import event
from smartstack.registry_auth import AUTH_NOT_ENABLED, TLSFileError, token_refused

log = logging.getLogger("smartstack.etcd")

T = TypeVar("T")
UNAUTHENTICATED = 16  # gRPC status code, as the gateway reports it
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (ConnectionError, OSError, TimeoutError)
# The gateway passes a "Grpc-Metadata-" header on as gRPC metadata: a watch that requires a
# leader, ended (UNAVAILABLE: the next endpoint) when its member has none.
LEADER_HEADER = {f"Grpc-Metadata-{REQUIRE_LEADER[0]}": REQUIRE_LEADER[1]}


class JsonKV(NamedTuple):
    """An etcd KeyValue from the gateway's JSON (bytes base64-encoded, int64 as strings)."""

    key: bytes
    value: bytes
    mod_revision: int
    create_revision: int
    lease: int = 0


def key_value(data: dict) -> JsonKV:
    return JsonKV(
        base64.b64decode(data.get("key", "")),
        base64.b64decode(data.get("value", "")),
        int(data.get("mod_revision", 0)),
        int(data.get("create_revision", 0)),
        int(data.get("lease", 0)),
    )


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def prefix_range_end(prefix: bytes) -> bytes:
    """The first key after every key starting with ``prefix`` (etcd's prefix range)."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\0"  # all keys


def prefix_range(prefix: bytes) -> dict[str, str]:
    return {"key": b64(prefix), "range_end": b64(prefix_range_end(prefix))}


class JsonWatch(EventQueue):
    """One watch: one streamed ``/v3/watch`` response, read by a task of its own."""

    def __init__(self, exchange: Exchange, messages: AsyncIterator[dict], client: object) -> None:
        super().__init__()
        self.client = client  # the endpoint turn it was made on (for fail-over)
        self._exchange = exchange
        self._task = asyncio.ensure_future(self._read(messages))

    async def _read(self, messages: AsyncIterator[dict]) -> None:
        error: BaseException | None = ConnectionError("etcd ended the watch stream")
        try:
            async for message in messages:
                self._dispatch(message)
        except asyncio.CancelledError:
            error = ConnectionError("watch closed")
        except Exception as exc:
            error = exc
        finally:
            await self._exchange.close()
            self._end(error)

    def _dispatch(self, message: dict) -> None:
        if "error" in message:
            raise streamed_error(message)
        result = message.get("result") or {}
        if result.get("canceled") or result.get("compact_revision"):
            raise refusal(result)
        for ev in result.get("events", ()):
            kind = "DELETE" if ev.get("type") == "DELETE" else "PUT"
            self.deliver(WatchEvent(kind, key_value(ev.get("kv") or {})))

    def _detach(self) -> None:
        self._task.cancel()

    @property
    def live(self) -> bool:
        return not self._ended

    def fail(self, exc: BaseException) -> None:
        self._end(exc)
        self._task.cancel()


def known(endpoint: str) -> str:
    """The addresses an endpoint's name last resolved to, for messages ("" for an IP)."""
    return tcp_connect.known(*split_endpoint(endpoint))


def streamed_error(message: dict) -> Exception:
    """An error the gateway wrote into a stream: a member failure (``transport is closing``,
    a deadline exceeded) is a connection error, as on any other endpoint failure: the
    watcher (or a keep-alive) moves to the next endpoint."""
    error = HttpStatusError(200, message)
    if error.member_failed:
        return ConnectionError(f"etcd stream: {error.message}")
    return error


def refusal(result: dict) -> Exception:
    """Why etcd cancelled (or never started) a watch. An unknown token (or none, once auth
    is on) is said in words only: as an Unauthenticated error, so that the connection
    authenticates again."""
    if result.get("compact_revision"):
        return WatchCompacted(int(result["compact_revision"]))
    reason = str(result.get("cancel_reason") or "no reason")
    if "code = Unauthenticated" in reason or token_refused(reason):
        return HttpStatusError(200, {"code": UNAUTHENTICATED, "message": reason})
    return RuntimeError(f"etcd cancelled the watch: {reason}")


class EtcdJsonConnection(Endpoints):
    """etcd's JSON gateway on one endpoint of a list, moving on when it fails."""

    transport = "json"
    connection_errors = CONNECTION_ERRORS
    compacted_errors = (WatchCompacted,)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._contexts = TLSContexts(self.tls) if self.tls is not None else None
        self._turn = object()  # this endpoint's turn: a fail-over starts a new one
        self._token: str | None = None
        self._auth_lock = asyncio.Lock()  # one Authenticate (bcrypt) for all the callers
        self._auth_off_said = False  # etcd_auth_not_enabled logged since the last token
        self._watches: weakref.WeakSet[JsonWatch] = weakref.WeakSet()
        self._probe = WatchProbe(self._probed, self.rotate, self._watching)

    async def rotate(self, reason: str, failed: object | None = None) -> None:
        """Use the next endpoint from the next call on (``failed``: the turn the caller saw
        fail; when it has already moved on there is nothing left to do). The watches made
        on the endpoint left fail: their watchers list and watch anew on the next one."""
        if failed is not None and failed is not self._turn:
            return
        left, endpoint = self._turn, self.current_endpoint
        self._turn, self._token = object(), None
        self._next_endpoint(reason)
        for watch in list(self._watches):
            if watch.client is left and watch.live:
                watch.fail(ConnectionError(f"etcd connection left {endpoint}: {reason}"))

    def _address(self) -> Target:
        host, port = split_endpoint(self.current_endpoint)
        context = self._contexts.context() if self._contexts is not None else None
        return Target(host, port, context, {})

    async def _target(self, sent: list[str]) -> Target:
        """Where to send a call, with the token, which is also put into ``sent``."""
        if self.username is None:
            return self._address()
        token = self._token
        if token is None:
            async with self._auth_lock:
                token = self._token  # a caller before us may have got it meanwhile
                if token is None:
                    turn, token = self._turn, await self._authenticate(self._address())
                    if turn is self._turn:  # not for the endpoint left meanwhile
                        self._token = token
        sent.append(token)
        target = self._address()
        return target._replace(headers={"Authorization": token}) if token else target

    def _forget_token(self, refused: str | None, message: str) -> None:
        """Ask for a new token, once for the token etcd refused: callers refused together
        retry with the one the first of them asks for."""
        if refused is not None and refused == self._token:
            self._token = None
            event(log, "etcd_reauthenticate", level=logging.WARNING, error=message)

    async def _authenticate(self, target: Target) -> str:
        """A token; "" while etcd's auth is not enabled (asked again when etcd refuses a call
        without one: ``token_refused``)."""
        auth = {"name": self.username, "password": self.password or ""}
        try:
            reply = await call(target, "/v3/auth/authenticate", auth)
        except HttpStatusError as exc:
            if AUTH_NOT_ENABLED not in exc.message:
                raise
            if not self._auth_off_said:  # once, not at every endpoint turn
                self._auth_off_said = True
                event(log, "etcd_auth_not_enabled", level=logging.WARNING,
                      endpoint=self.current_endpoint, user=self.username)  # fmt: skip
            return ""
        self._auth_off_said = False
        return str(reply["token"])

    def _probed(self) -> tuple[Target, object]:
        """Where the watch probe goes: the current endpoint, which carries every live watch
        (a rotation fails those of the endpoint it leaves)."""
        return self._address(), self._turn

    def _watching(self) -> bool:
        return any(watch.live for watch in self._watches)

    async def with_endpoint(
        self,
        fn: Callable[[Target, object], Awaitable[T]],
        timeout: float | None = None,
        anonymous: bool = False,
    ) -> T:
        """``fn(target, turn)`` within ``timeout``; on a connection error, a timeout or a
        member failure (``HttpStatusError.member_failed``), the next endpoint, once per
        endpoint; authenticate again (once) when etcd no longer knows our token."""
        last: BaseException | None = None
        failures = 0
        reauthenticated = False
        while failures < len(self.endpoints):
            turn, endpoint, limit = self._turn, self.current_endpoint, timeout or self.timeout
            sent: list[str] = []  # the token this try sent
            started = time.monotonic()
            try:
                on = fn(self._address(), turn) if anonymous else self._on(fn, turn, sent)
                result = await asyncio.wait_for(on, limit)
            except HttpStatusError as exc:
                stale = exc.code == UNAUTHENTICATED or token_refused(exc.message)
                if stale and self.username and not reauthenticated:
                    reauthenticated = True
                    self._forget_token(sent[-1] if sent else None, exc.message)
                    continue
                if not exc.member_failed:
                    raise  # etcd's answer (lease not found, permission denied, ...)
                last, failures = exc, failures + 1
                reason = f"HTTP {exc.status}: {exc.message[:120]}{self._hint()}"
                await self.rotate(reason, turn)
            except CONNECTION_ERRORS as exc:
                if isinstance(exc, TimeoutError) and not str(exc):  # wait_for's: say where
                    exc = TimeoutError(f"no answer from {endpoint}{known(endpoint)} in {limit:g} s")
                last, failures = exc, failures + 1
                if isinstance(exc, ssl.SSLError | TLSFileError):
                    event(log, "etcd_tls_failed", level=logging.ERROR, error=str(exc)[:300],
                          endpoint=self.current_endpoint,
                          hint="check etcd_tls: ca_cert, cert_cert, cert_key")  # fmt: skip
                await self.rotate(f"{type(exc).__name__}: {str(exc)[:120]}", turn)
            else:
                self._answered(started)
                return result
        assert last is not None
        raise last

    def _hint(self) -> str:
        if self.tls is None or not self.tls.cert_cert:
            return ""
        return (
            " (with --client-cert-auth, etcd's JSON gateway needs a server certificate that"
            " also allows clientAuth; else set etcd_transport: grpc)"
        )

    async def _on(
        self, fn: Callable[[Target, object], Awaitable[T]], turn: object, sent: list[str]
    ) -> T:
        return await fn(await self._target(sent), turn)

    async def _range(self, request: dict, timeout: float | None = None) -> dict:
        async def ask(target: Target, _turn: object) -> dict:
            return await call(target, "/v3/kv/range", request)

        return await self.with_endpoint(ask, timeout)

    async def list_prefix(self, prefix: bytes, timeout: float) -> Listing:
        """The keys under ``prefix`` and the revision read at."""
        reply = await self._range(prefix_range(prefix), timeout)
        kvs = [key_value(kv) for kv in reply.get("kvs", ())]
        return Listing(kvs, int(reply["header"]["revision"]))

    async def fingerprint(self, prefix: bytes) -> tuple[int, int]:
        """(key count, newest mod revision) under ``prefix`` (see ``etcd_batch.fingerprint``)."""
        request = {**prefix_range(prefix), "limit": 1, "keys_only": True,
                   "sort_order": "DESCEND", "sort_target": "MOD"}  # fmt: skip
        reply = await self._range(request)
        kvs = reply.get("kvs") or [{}]
        return int(reply.get("count", 0)), int(kvs[0].get("mod_revision", 0))

    async def watch_prefix(self, prefix: bytes, start_revision: int) -> JsonWatch:
        """A created watch on ``prefix`` from ``start_revision``; etcd must say it created it
        within the connection's timeout, else the next endpoint is tried."""

        async def create(target: Target, turn: object) -> JsonWatch:
            request = {"create_request": {**prefix_range(prefix), "start_revision": start_revision}}
            target = target._replace(headers={**target.headers, **LEADER_HEADER})
            exchange = await open_stream(target, "/v3/watch", request)
            messages = exchange.messages()
            try:
                first = await anext(messages, None)
                if first is None:
                    raise ConnectionError("etcd ended the watch stream before creating it")
                if "error" in first:
                    raise streamed_error(first)
                result = first.get("result") or {}
                if not result.get("created") or result.get("canceled"):
                    raise refusal(result)
                if turn is not self._turn:  # it moved on meanwhile: not on the member left
                    raise ConnectionError("etcd connection failed over while a watch was made")
            except BaseException:
                await exchange.close()
                raise
            watch = JsonWatch(exchange, messages, turn)
            self._watches.add(watch)
            self._probe.start()
            return watch

        return await self.with_endpoint(create)

    async def _wake_probe(self) -> object:
        async def led(target: Target, _turn: object) -> object:
            reply = await call(target, STATUS_PATH, {})
            if not int(reply.get("leader") or 0):  # answers, but serves no listing
                raise ConnectionError("the endpoint has no leader")
            return reply

        try:
            # Without a token: etcd's status needs none, and a login every probe would
            # be etcd's bcrypt check every 2 s per connection while its password is wrong.
            return await self.with_endpoint(led, anonymous=True)  # no answer: the next
        except HttpStatusError as exc:
            raise ProbeRefused(exc.message) from exc  # (a member failure rotated: not here)

    async def close(self) -> None:
        """End every watch of this connection (its watchers are stopping)."""
        await self.wake.close()
        await self._probe.close()
        for watch in list(self._watches):
            watch.fail(ConnectionError("watch closed"))
        with contextlib.suppress(Exception):
            await asyncio.sleep(0)  # their tasks close their connections
