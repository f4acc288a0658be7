"""nerve's etcd calls (keys and leases) through etcd's JSON gateway, without gRPC.

An etcd nerve paid ~13 MB of RSS for gRPC and aetcd to make a put per health change and a
keep-alive every TTL/3. ``EtcdJsonClient`` answers the aetcd calls nerve makes, with
the same names and the fields nerve reads (``get``, ``put``, ``delete``, ``lease``,
``revoke_lease``, ``get_lease_info``), plus a keep-alive that requires a leader and a
compare-and-delete: one code path for both transports. ``EtcdJsonKVConnection`` binds it
to the current endpoint (``with_client``, as ``EtcdConnection.with_client``), failing over
and authenticating as ``EtcdJsonConnection.with_endpoint`` does.
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple, TypeVar

from smartstack.etcd_http import KeptLine, Target, call, first_message
from smartstack.etcd_json import (
    LEADER_HEADER,
    EtcdJsonConnection,
    JsonKV,
    b64,
    key_value,
    streamed_error,
)

T = TypeVar("T")
KEEPALIVE_PATH = "/v3/lease/keepalive"


class Header(NamedTuple):
    revision: int


class Written(NamedTuple):
    """A put's answer: ``header.revision`` is the revision it was written at."""

    header: Header


class Granted(NamedTuple):
    id: int
    ttl: int


class LeaseInfo(NamedTuple):
    """LeaseTimeToLive: ``TTL`` seconds left (-1: etcd does not know the lease)."""

    ID: int
    TTL: int
    grantedTTL: int
    keys: list[bytes]


class KeptAlive(NamedTuple):
    """A keep-alive's answer: ``TTL`` 0 when the lease has expired."""

    ID: int
    TTL: int


class EtcdJsonClient:
    """etcd's KV and lease calls on one endpoint (``target``: address, TLS, auth token)."""

    def __init__(self, target: Target, line: KeptLine | None = None) -> None:
        self.target = target
        self.endpoint = f"{target.host}:{target.port}"
        self.line = line  # keep-alives go on it: a connection kept between them

    async def get(self, key: bytes) -> JsonKV | None:
        reply = await call(self.target, "/v3/kv/range", {"key": b64(key)})
        kvs = reply.get("kvs") or []
        return key_value(kvs[0]) if kvs else None

    async def put(self, key: bytes, value: bytes, lease: int = 0) -> Written:
        request = {"key": b64(key), "value": b64(value), "lease": str(lease)}
        reply = await call(self.target, "/v3/kv/put", request)
        return Written(Header(int(reply["header"]["revision"])))

    async def delete(self, key: bytes) -> bool:
        reply = await call(self.target, "/v3/kv/deleterange", {"key": b64(key)})
        return int(reply.get("deleted", 0)) > 0

    async def delete_if_revision(self, key: bytes, revision: int) -> bool:
        """Delete ``key`` only if it was last written at ``revision`` (one transaction)."""
        compare = {"target": "MOD", "result": "EQUAL", "key": b64(key),
                   "mod_revision": str(revision)}  # fmt: skip
        request = {"compare": [compare], "success": [{"request_delete_range": {"key": b64(key)}}]}
        return bool((await call(self.target, "/v3/kv/txn", request)).get("succeeded"))

    async def lease(self, ttl: int) -> Granted:
        reply = await call(self.target, "/v3/lease/grant", {"TTL": ttl})
        return Granted(int(reply["ID"]), int(reply.get("TTL", 0)))

    async def revoke_lease(self, lease_id: int) -> None:
        await call(self.target, "/v3/lease/revoke", {"ID": str(lease_id)})

    async def get_lease_info(self, lease_id: int, keys: bool = False) -> LeaseInfo:
        # JSON leaves out zeros: no TTL is 0 (under a second left), not -1 (unknown).
        request = {"ID": str(lease_id), "keys": keys}
        reply = await call(self.target, "/v3/lease/timetolive", request)
        found = [base64.b64decode(k) for k in reply.get("keys") or ()]
        return LeaseInfo(lease_id, int(reply.get("TTL", 0)), int(reply.get("grantedTTL", 0)),
                         found)  # fmt: skip

    async def keepalive(self, lease_id: int) -> KeptAlive:
        """One keep-alive on the streamed call, which requires a leader as on gRPC: a member
        without one refuses it at once (UNAVAILABLE: the next endpoint) instead of letting
        it time out while the lease runs down."""
        target = self.target._replace(headers={**self.target.headers, **LEADER_HEADER})
        request = {"ID": str(lease_id)}
        if self.line is None:
            message = await first_message(target, KEEPALIVE_PATH, request)
        else:  # asked once, the stream ends after its one answer: the connection is kept
            message = await self.line.post(target, KEEPALIVE_PATH, request)
        if "error" in message:
            raise streamed_error(message)
        result = message.get("result") or {}
        return KeptAlive(int(result.get("ID", lease_id)), int(result.get("TTL", 0)))


class EtcdJsonKVConnection(EtcdJsonConnection):
    """The gateway connection with nerve's key and lease calls, on either transport's
    terms (``EtcdConnection`` has the same three methods over gRPC). Its lease keep-alives
    share one kept connection (``KeptLine``): on a 300 ms link a keep-alive costs one round
    trip, not a TCP handshake first."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._line = KeptLine()

    async def with_client(
        self,
        fn: Callable[[EtcdJsonClient], Awaitable[T]],
        timeout: float | None = None,
        probe: bool = True,
    ) -> T:
        """``fn`` with a client of the current endpoint, failing over as ``with_endpoint``
        does. ``probe`` is the gRPC connection's: here a call that times out always moves on
        at once (a call is a connection of its own: nothing shared is torn down)."""

        async def run(target: Target, _turn: object) -> T:
            return await fn(EtcdJsonClient(target, self._line))

        return await self.with_endpoint(run, timeout)

    async def keepalive(self, client: EtcdJsonClient, lease_id: int) -> KeptAlive:
        """One keep-alive of ``lease_id`` that requires a leader (gRPC's ``refresh_lease``)."""
        return await client.keepalive(lease_id)

    async def delete_if_revision(self, client: EtcdJsonClient, key: bytes, revision: int) -> bool:
        return await client.delete_if_revision(key, revision)

    async def close(self) -> None:
        await self._line.close()
        await super().close()
