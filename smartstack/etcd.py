"""etcd v3 connections with fail-over across the configured endpoints.

We use ``aetcd`` (asyncio, maintained) rather than python-etcd3, whose last
release (0.12.0, 2020) no longer imports with protobuf >= 4. aetcd talks to one
endpoint per client, so this module rotates through the endpoint list when a
call fails; callers retry through ``with_client``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aetcd
import aetcd.client
import aetcd.exceptions
import aetcd.rpc
import aetcd.utils
import aetcd.watcher
import grpc

from smartstack.etcd_batch import BatchLister, fingerprint, fingerprint_request
from smartstack.etcd_events import Endpoints, Listing, split_endpoint
from smartstack.etcd_retire import CallsInFlight
from smartstack.etcd_wake import ProbeRefused
from smartstack.etcd_watch import (
    CREATE_PATIENCE,
    PrefixWatch,
    WatchStream,
    client_error,
    require_leader,
)
from smartstack.logs import event
from smartstack.registry_address import join_host_port
from smartstack.registry_auth import AUTH_NOT_ENABLED, EtcdTLS, TLSFileError, token_refused

log = logging.getLogger("smartstack.etcd")

T = TypeVar("T")

# Errors that mean "this endpoint is not usable now": rotate and retry.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    aetcd.exceptions.ConnectionFailedError,
    aetcd.exceptions.ConnectionTimeoutError,
    aetcd.exceptions.InternalError,
    asyncio.TimeoutError,
    ConnectionError,
    OSError,
)


# What gRPC's error text says when TLS (not the network) failed: a bad or unknown
# certificate, a handshake the server broke off (e.g. no client certificate).
TLS_ERROR_MARKS = ("handshake", "Handshake", "SSL", "TSI_", "certificate")

# A private subchannel per client: otherwise gRPC hands a new client the shared connection that
# is still in reconnect backoff after an outage (recovery took up to ~10 s instead of < 2 s).
# HTTP/2 keepalive: a member gone silent (packets dropped, no RST) left a watch stream open
# and quiet until the 2-minute consistency check or TCP gave up (136 s measured); a ping
# every 10 s, unanswered for 5 s, ends the connection. gRPC's defaults would not: a ping
# waits 60 s for its answer (ping_timeout_ms), and after 2 pings without data it pings once
# a minute (max_pings_without_data; a quiet watch: 40-65 s measured). Only while a call is
# open: etcd (--grpc-keepalive-min-time 5 s, PermitWithoutStream false) answers pings more
# often, or on a connection without a call, with GOAWAY "too_many_pings".
GRPC_OPTIONS = {
    "grpc.use_local_subchannel_pool": 1,
    "grpc.initial_reconnect_backoff_ms": 100,
    "grpc.max_reconnect_backoff_ms": 1000,
    "grpc.keepalive_time_ms": 10_000,
    "grpc.keepalive_timeout_ms": 5_000,
    "grpc.keepalive_permit_without_calls": 0,
    "grpc.http2.max_pings_without_data": 0,
    "grpc.http2.ping_timeout_ms": 5_000,
}


class Client(aetcd.Client):
    """aetcd.Client whose ``connect()`` opens a TLS channel when given ``tls`` (aetcd 1.0
    opens insecure ones only) and carries on without a token when etcd's auth is not enabled
    (as etcd's clientv3 does: credentials may be configured before ``etcdctl auth enable``;
    ``with_client`` asks again when etcd then refuses the token-less calls). Otherwise
    aetcd's ``connect()``."""

    def __init__(self, *args, tls: EtcdTLS | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._tls = tls
        self.auth_off = False  # etcd said its auth is not enabled (EtcdConnection logs it)

    @aetcd.client._handle_errors
    async def connect(self) -> None:
        if self._connected.is_set():
            return
        if self._is_connecting:
            await asyncio.wait_for(self._connected.wait(), self._connect_wait_timeout)
            return
        try:
            self._is_connecting = True
            # ('[::1]:2379': gRPC read an unbracketed IPv6 host as a misformatted name)
            target, options = join_host_port(self._host, self._port), self._options.items()
            if self._tls is None:
                self.channel = grpc.aio.insecure_channel(target, options=options)
            else:
                # Read on every connect: a renewed certificate is used from the next one on.
                # read() checks the files: gRPC aborts the process on an empty cert or key.
                credentials = grpc.ssl_channel_credentials(*self._tls.read())
                self.channel = grpc.aio.secure_channel(target, credentials, options=options)
            if self._username is not None and self._password is not None:
                self.metadata = await self._authenticate()
            self.kvstub = aetcd.rpc.KVStub(self.channel)
            self.clusterstub = aetcd.rpc.ClusterStub(self.channel)
            self.leasestub = aetcd.rpc.LeaseStub(self.channel)
            self.maintenancestub = aetcd.rpc.MaintenanceStub(self.channel)
            self._watcher = aetcd.watcher.Watcher(
                aetcd.rpc.WatchStub(self.channel), timeout=self._timeout, metadata=self.metadata
            )
            self._connected.set()
        finally:
            self._is_connecting = False

    async def _authenticate(self) -> tuple[tuple[str, str], ...] | None:
        """The token's metadata; None while etcd's auth is not enabled."""
        self.auth_stub = aetcd.rpc.AuthStub(self.channel)
        request = aetcd.rpc.AuthenticateRequest(name=self._username, password=self._password)
        try:
            resp = await self.auth_stub.Authenticate(request, timeout=self._timeout)
        except aetcd.rpc.AioRpcError as exc:
            if AUTH_NOT_ENABLED not in (exc.details() or ""):
                raise
            self.auth_off = True
            return None
        return (("token", resp.token),)


async def prefix_fingerprint(client: aetcd.Client, prefix: bytes) -> tuple[int, int]:
    """(number of keys, highest mod_revision among them) under ``prefix``, in one small call
    (``smartstack.etcd_batch.fingerprint``); ``EtcdConnection.fingerprint`` batches them."""
    await client.connect()
    response = await client.kvstub.Range(
        fingerprint_request(prefix), timeout=client._timeout, metadata=client.metadata
    )
    return fingerprint(response)


async def member_leader(client: aetcd.Client) -> int:
    """The leader's member id as the client's member sees it; 0: it has none (cut off from
    its peers, or an election under way). One call: aetcd's ``status()`` lists members too."""
    await client.connect()
    reply = await client.maintenancestub.Status(
        aetcd.rpc.StatusRequest(), timeout=client._timeout, metadata=client.metadata
    )
    return reply.leader


async def refresh_lease(client: aetcd.Client, lease_id: int) -> Any:
    """aetcd's ``refresh_lease`` on a stream that requires a leader: a member without one
    refuses it at once (a connection error: the next endpoint) instead of letting it time out
    while the lease runs down. No deadline of its own: the caller's (``with_client``'s) is
    the lease keeper's, which may let it wait longer than a call (a late answer on a slow
    link still renews the lease); gRPC's would end it, and with it the channel."""
    await client.connect()
    try:
        async for reply in client.leasestub.LeaseKeepAlive(
            [aetcd.rpc.LeaseKeepAliveRequest(ID=lease_id)],
            timeout=None,
            metadata=require_leader(client.metadata),
        ):
            return reply
    except aetcd.rpc.AioRpcError as exc:
        raise client_error(exc) from exc
    return None


class EtcdConnection(Endpoints):
    """A connected aetcd client on one endpoint of a list, moving on when it fails."""

    transport = "grpc"
    connection_errors = CONNECTION_ERRORS
    compacted_errors = (aetcd.exceptions.RevisionCompactedError,)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._client: aetcd.Client | None = None
        self._lock = asyncio.Lock()
        self._probes: dict[int, tuple[aetcd.Client, asyncio.Future[str | None]]] = {}
        self._stream: WatchStream | None = None  # every watch, on the current client
        self._lister: BatchLister | None = None
        # Clients closed to authenticate again: the calls they cancel retry, not fail.
        self._refused: weakref.WeakSet[aetcd.Client] = weakref.WeakSet()
        self._auth_off_said = False  # etcd_auth_not_enabled logged since the last token
        self._calls = CallsInFlight(_close_quietly)  # a replaced client ends its calls first

    async def client(self) -> aetcd.Client:
        async with self._lock:
            if self._client is None:
                host, port = split_endpoint(self.current_endpoint)
                settings = dict(
                    host=host,
                    port=port,
                    username=self.username,
                    password=self.password,
                    timeout=self.timeout,
                    options=GRPC_OPTIONS,
                )
                client = Client(**settings, tls=self.tls)
                try:
                    await client.connect()
                except BaseException:
                    # With user auth, connect() opened a channel to authenticate: close it,
                    # or every failed attempt during an outage leaks a gRPC channel.
                    await _close_quietly(client)
                    raise
                self._client = client
                if client.auth_off and not self._auth_off_said:  # once, not at every connect
                    event(log, "etcd_auth_not_enabled", level=logging.WARNING,
                          endpoint=self.current_endpoint, user=self.username)  # fmt: skip
                self._auth_off_said = client.auth_off
            return self._client

    async def rotate(self, reason: str, failed: aetcd.Client | None = None) -> None:
        """Drop the current client and use the next endpoint for the next call.

        ``failed`` is the client the caller saw fail: when it has already been replaced (many
        watchers share one client and fail together) there is nothing left to do.
        """
        async with self._lock:
            if failed is not None and failed is not self._client:
                return
            old, self._client = self._client, None
            self._next_endpoint(reason)
        await self._close_stream(old)
        await self._calls.retire(old)  # a late keep-alive on it may still renew the lease

    async def _endpoint_trouble(self, client: aetcd.Client | None) -> str | None:
        """Why the endpoint is of no use (None: it is fine), from one status probe shared
        by every caller that timed out at once (a finished one is not reused: the member
        may have lost its leader since)."""
        if client is None:
            return "the endpoint does not answer"  # not even connected
        probe = self._probes.get(id(client))
        if probe is None or probe[0] is not client or probe[1].done():
            task = asyncio.ensure_future(self._probe(client))
            self._probes = {id(client): (client, task)}  # only the current client matters
            probe = (client, task)
        try:
            return await asyncio.shield(probe[1])
        except asyncio.CancelledError:
            # The probe's channel was closed under it (the connection closing): not our
            # cancellation, and a CancelledError would end a watcher's or reporter's task.
            if not probe[1].cancelled() or _cancelling():
                raise
            return "the endpoint's client was closed"

    async def _probe(self, client: aetcd.Client) -> str | None:
        try:
            with self._calls.running(client):  # a rotation meanwhile closes it after the probe
                leader = await asyncio.wait_for(member_leader(client), self.timeout)
        except Exception:
            return "the endpoint does not answer"
        # A member cut off from its peers answers this, but serves no read, write or
        # keep-alive: staying on it would lose the lease and hold watches silent.
        return "the endpoint has no leader" if leader == 0 else None

    async def with_client(
        self,
        fn: Callable[[aetcd.Client], Awaitable[T]],
        timeout: float | None = None,
        probe: bool = True,
    ) -> T:
        """Run ``fn(client)``; on a connection error rotate once per endpoint and retry; when
        etcd no longer knows our auth token, authenticate again (once) and retry.

        A call that only times out does not prove the endpoint is gone (a busy etcd, a large
        range): the endpoint is probed first and abandoned only if the probe fails too, or
        says its member has no leader. Otherwise one slow moment would tear down the client
        every watcher shares. ``probe=False``: a timeout moves on at once, for an idempotent
        call that cannot wait for a probe (a lease keep-alive: a hung member would cost a
        second timeout, and with it the lease).
        """
        last: BaseException | None = None
        failures = 0
        reauthenticated = False
        while failures < len(self.endpoints):
            client: aetcd.Client | None = None
            started = time.monotonic()
            try:
                client = await self.client()
                with self._calls.running(client):
                    result = await asyncio.wait_for(fn(client), timeout or self.timeout)
                self._answered(started)
                return result
            except TimeoutError as exc:
                if client is not None and client is not self._client:
                    trouble = "replaced meanwhile"  # (a probe of it would be closed under us)
                else:
                    trouble = await self._endpoint_trouble(client) if probe else "not probed"
                if trouble is None:
                    raise  # the endpoint answers: the caller retries with its own backoff
                last = exc
                failures += 1
                await self.rotate(f"timeout, and {trouble}", client)
            except CONNECTION_ERRORS as exc:
                last = exc
                failures += 1
                self._log_tls_failure(exc)
                await self.rotate(f"{type(exc).__name__}: {str(exc)[:120]}", client)
            except asyncio.CancelledError:
                # gRPC cancels the calls in flight on a channel it closes: another caller's
                # failover closed this client under us. Not our cancellation: the next client.
                if not _closed_under_us(client, self._client):
                    raise
                if client in self._refused and not reauthenticated:
                    reauthenticated = True  # closed for a new token: not the endpoint's fault
                    continue
                last = ConnectionError(f"etcd client closed by a failover ({self.failovers})")
                failures += 1
            except aetcd.exceptions.ClientError as exc:
                # aetcd authenticates only when it connects. etcd forgets a token after
                # --auth-token-ttl idle seconds and on a restart that gRPC reconnects through
                # without an error, and a client that found auth off has none once it is on:
                # without a new token every call would fail for ever.
                if reauthenticated or self.username is None or not _token_refused(exc):
                    raise
                reauthenticated = True
                await self._reauthenticate(client, exc)
        assert last is not None
        raise last

    async def _reauthenticate(self, refused: aetcd.Client | None, exc: BaseException) -> None:
        """Drop the client etcd refused a token from, once: the next ``client()`` connects
        and authenticates (once, under the lock) for every caller. When another caller has
        already replaced it, retry on the new one: closing that would cancel its calls, and
        each caller's Authenticate costs etcd ~0.5 s of bcrypt."""
        async with self._lock:
            if refused is None or refused is not self._client:
                return
            self._client = None
            self._refused.add(refused)
        event(log, "etcd_reauthenticate", level=logging.WARNING, error=str(exc)[:120])
        await self._close_stream(refused)
        await _close_quietly(refused)

    async def keepalive(self, client: aetcd.Client, lease_id: int) -> Any:
        """One keep-alive of ``lease_id`` that requires a leader (``refresh_lease``)."""
        return await refresh_lease(client, lease_id)

    async def delete_if_revision(self, client: aetcd.Client, key: bytes, revision: int) -> bool:
        """Delete ``key`` only if it was last written at ``revision`` (one transaction)."""
        tx = client.transactions
        done, _ = await client.transaction([tx.mod(key) == revision], [tx.delete(key)], [])
        return bool(done)

    def _batch(self) -> BatchLister:
        if self._lister is None:
            self._lister = BatchLister(self.with_client)
        return self._lister

    async def list_prefix(self, prefix: bytes, timeout: float) -> Listing:
        """The keys under ``prefix`` and the revision read at; listings asked for together
        are read together (``smartstack.etcd_batch``). ``timeout`` bounds the whole wait."""
        return await self._batch().list(prefix, timeout)

    async def fingerprint(self, prefix: bytes) -> tuple[int, int]:
        """(key count, newest mod revision) under ``prefix``, batched like listings, within
        the connection's timeout."""
        return await self._batch().fingerprint(prefix, self.timeout)

    async def watch_prefix(self, prefix: bytes, start_revision: int) -> PrefixWatch:
        """A watch on ``prefix`` from ``start_revision``, on the one watch stream of the
        current client (``smartstack.etcd_watch``). A stream silent for the connection's
        ``timeout`` while a creation waits is abandoned (all its watches fail) and the
        creation raises a TimeoutError: the endpoint is probed, and the next creation
        opens a new stream (on the next endpoint if the probe failed too)."""

        async def create(client: aetcd.Client) -> PrefixWatch:
            stream = self._stream
            if stream is None or stream.client is not client or stream.broken:
                self._stream = stream = WatchStream(client)
            return await stream.watch_prefix(prefix, start_revision, self.timeout)

        # The stream bounds the creation; this outer bound is only a guard beyond it.
        return await self.with_client(create, (CREATE_PATIENCE + 1) * self.timeout)

    async def _close_stream(self, client: aetcd.Client | None) -> None:
        """Fail the watches on ``client``'s stream (it is being replaced or closed)."""
        stream = self._stream
        if stream is not None and stream.client is client:
            self._stream = None
            await stream.close()

    def _log_tls_failure(self, exc: BaseException) -> None:
        """Say plainly when the TLS handshake failed: gRPC buries it in a generic
        "failed to connect" message, where it looks like an outage."""
        text = str(exc)
        marked = isinstance(exc, TLSFileError) or any(m in text for m in TLS_ERROR_MARKS)
        if self.tls is None or not marked:
            return
        detail = text.split(f":{split_endpoint(self.current_endpoint)[1]}: ", 1)[-1]
        event(log, "etcd_tls_failed", level=logging.ERROR, endpoint=self.current_endpoint,
              error=detail[:300], hint="check etcd_tls: ca_cert, cert_cert, cert_key")  # fmt: skip

    async def _wake_probe(self) -> object:
        async def led(client: aetcd.Client) -> int:
            leader = await member_leader(client)
            if not leader:  # answers, but serves no listing: not a recovery
                raise ConnectionError("the endpoint has no leader")
            return leader

        try:  # (a timeout rotates, closing the watches' client, only if with_client's probe fails)
            return await self.with_client(led)  # no answer: the next endpoint
        except aetcd.exceptions.ClientError as exc:
            if isinstance(exc, CONNECTION_ERRORS):
                raise
            raise ProbeRefused(str(exc)[:200]) from exc  # a login refused: the member is up

    async def close(self) -> None:
        await self.wake.close()
        async with self._lock:
            old, self._client = self._client, None
        await self._close_stream(old)
        await _close_quietly(old)
        await self._calls.close_all()


def _token_refused(exc: aetcd.exceptions.ClientError) -> bool:
    """etcd refused our token, or our lack of one ("user name is empty", as a watch's cancel
    reason too): authenticating again may cure it."""
    return isinstance(exc, aetcd.exceptions.UnauthenticatedError) or token_refused(str(exc))


def _cancelling() -> bool:
    """Whether our own task is being cancelled (not a call cancelled under it)."""
    task = asyncio.current_task()
    return bool(task and task.cancelling())


def _closed_under_us(used: aetcd.Client | None, current: aetcd.Client | None) -> bool:
    """A CancelledError from a call on ``used`` came from its channel being closed by a
    failover (``used`` is no longer the current client), not from our task's cancellation."""
    return used is not None and used is not current and not _cancelling()


async def _close_quietly(client: aetcd.Client | None) -> None:
    if client is not None:  # (a broken channel may fail to close; it is gone either way)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.close(), 2)
