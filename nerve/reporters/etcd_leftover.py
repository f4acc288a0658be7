"""A previous run's etcd lease, kept alive while this run still holds a key on it.

A nerve killed with -9 leaves its keys on a lease nobody renews: they vanish after its TTL,
whatever the restarted nerve's checks say, and a healthy instance drops out of synapse's
list until ``rise`` passes put it back. While a reporter holds such a leftover (its checks
have not decided yet: ``Reporter.holding``) the restarted nerve renews that lease. Once the
last holder has decided (its key put on our lease, or deleted) the renewals stop and the
lease expires on its own: it is never revoked, since it may carry keys of a service this
run no longer has (removed from the config between runs), which then go with it, as they
would have without us. Renewing a lease keeps *every* key on it alive, so a lease is
renewed only while each of its keys is held by one of this run's reporters (same record):
one key of a service that moved or was removed between runs, and the lease is left to
expire with all its keys, as without us. A holder is renewed for at most its bound (the
``rise`` rounds its checks need), never beyond. Timing as ``etcd_lease``: a keep-alive
every TTL/6 (the TTL the lease was granted with, as etcd says), each waiting at most
``keepalive_timeout``, to the next member at once (unprobed) when one times out.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from nerve.reporters.etcd_lease import keepalive_interval, keepalive_timeout, retry_pause
from smartstack.logs import FailureStreak, event
from smartstack.tasks import cancel_and_wait

if TYPE_CHECKING:
    from nerve.reporters.etcd_lease import Connection

log = logging.getLogger("nerve.etcd")

Refresh = Callable[[Any, int], Awaitable[Any]]
LeaseKeys = Callable[[Any, int], Awaitable[tuple[float, list[bytes]]]]
PENDING_PAUSE = 0.05  # seconds: a reporter still reading its key may claim one of the lease's


async def lease_keys(client: Any, lease_id: int) -> tuple[float, list[bytes]]:
    """(TTL left in whole seconds, the keys on the lease): etcd's LeaseTimeToLive; TTL -1
    once expired."""
    info = await client.get_lease_info(lease_id, keys=True)
    return float(info.TTL), [bytes(k) for k in info.keys]


def granted_ttl(reply: object) -> float:
    """The TTL a keep-alive answer gives the lease; <= 0: it has expired (etcd answers an
    unknown lease with TTL 0). int64 may come as a string (JSON)."""
    try:
        return float(getattr(reply, "TTL", 0) or 0) if reply is not None else 0.0
    except (TypeError, ValueError):
        return 0


@dataclass
class _Held:
    holders: dict[object, float] = field(default_factory=dict)  # holder -> deadline
    task: asyncio.Task[None] | None = None
    ttl: float = 0.0  # as the last keep-alive said; 0: not known yet
    expires_at: float = 0.0  # monotonic, from the last renewal's sending
    refused: bool = False  # a key nobody holds was seen on it (logged once)
    outage: FailureStreak = field(
        default_factory=lambda: FailureStreak(
            log, "etcd_leftover_keepalive_failed", "etcd_leftover_keepalive_recovered"
        )
    )


class LeftoverLeases:
    """The leftover leases a nerve keeps on one etcd cluster, shared by its reporters."""

    def __init__(
        self,
        conn: Connection,
        own: Callable[[], int | None],
        refresh: Refresh | None = None,
        keys: LeaseKeys = lease_keys,
    ) -> None:
        """``refresh``: one keep-alive on a client (default: the connection's, which
        requires a leader)."""
        self.conn = conn
        self._own = own  # this run's lease: renewed by the LeaseKeeper, never here
        self._refresh: Refresh = refresh or conn.keepalive  # type: ignore[assignment]
        self._keys = keys
        self._leases: dict[int, _Held] = {}
        self._claims: dict[object, bytes] = {}  # holder -> the key it holds
        self._pending: set[object] = set()  # reading their key: may still claim one

    def expect(self, holder: object) -> None:
        """``holder`` is reading its key: a lease with a key nobody claims yet waits for it."""
        self._pending.add(holder)

    def hold(
        self, lease_id: int, holder: object, seconds: float, claim: bytes, **fields: Any
    ) -> bool:
        """Renew ``lease_id`` for ``holder`` (which found its key ``claim`` on it with its
        record), for at most ``seconds``; False when there is nothing to renew (a key
        without a lease, or one on this run's own lease)."""
        self._pending.discard(holder)
        if lease_id == 0 or lease_id == self._own():
            return False
        self._claims[holder] = claim
        held = self._leases.get(lease_id)
        if held is None:
            held = self._leases[lease_id] = _Held()
            held.task = asyncio.get_running_loop().create_task(
                self._keep(lease_id, held), name=f"etcd-leftover-{lease_id:x}"
            )
        held.holders[holder] = time.monotonic() + seconds
        event(
            log,
            "etcd_leftover_lease_held",
            **fields,
            lease=f"{lease_id:x}",
            bound=round(seconds, 2),
        )
        return True

    def release(self, holder: object) -> None:
        """``holder`` has decided (or holds nothing): a lease nobody else holds is no longer
        renewed."""
        self._pending.discard(holder)
        self._claims.pop(holder, None)
        for lease_id, held in list(self._leases.items()):
            if held.holders.pop(holder, None) is not None and not held.holders:
                self._drop(lease_id, held, "decided")

    def holders(self, lease_id: int) -> int:
        held = self._leases.get(lease_id)
        return len(held.holders) if held is not None else 0

    async def close(self) -> None:
        """Stop every renewal (shutdown); nothing is revoked."""
        leases, self._leases = list(self._leases.values()), {}
        for held in leases:
            await cancel_and_wait(held.task)

    def _drop(self, lease_id: int, held: _Held, reason: str) -> None:
        if self._leases.get(lease_id) is not held:
            return
        del self._leases[lease_id]
        if held.task is not None and held.task is not asyncio.current_task():
            held.task.cancel()
        if reason == "expired":
            event(log, "etcd_leftover_lease_expired", lease=f"{lease_id:x}")
        else:  # left to expire: etcd deletes what is still on it a TTL after the last renewal
            event(log, "etcd_leftover_lease_released", lease=f"{lease_id:x}", reason=reason,
                  expires_in=round(max(0.0, held.expires_at - time.monotonic()), 2))  # fmt: skip

    def _within_bound(self, held: _Held, now: float) -> bool:
        """Drop the holders past their bound; whether any is left."""
        for holder, deadline in list(held.holders.items()):
            if deadline <= now:
                del held.holders[holder]
        return bool(held.holders)

    async def _keep(self, lease_id: int, held: _Held) -> None:
        while True:
            sent = time.monotonic()
            if not self._within_bound(held, sent):
                self._drop(lease_id, held, "bound")
                return
            # Before the first answer the TTL is unknown: the connection's own timeout.
            wait = self.conn.timeout
            if held.ttl > 0:
                wait = keepalive_timeout(self.conn.timeout, held.ttl, held.expires_at - sent)
            try:
                verdict = await self._vouched(lease_id, held, wait)
                if verdict in ("wait", "foreign_key"):  # not renewed now; looked at again:
                    # a withdrawing holder's key goes once its delete lands (then renewals
                    # resume for the others); a key nobody holds lets the lease expire
                    await asyncio.sleep(PENDING_PAUSE)
                    continue
                if verdict != "renew":
                    self._drop(lease_id, held, verdict)
                    return
                reply = await self.conn.with_client(
                    lambda c: self._refresh(c, lease_id), wait, probe=False
                )
            except Exception as exc:  # unreachable: keep trying while the lease may live
                held.outage.failure(
                    f"{type(exc).__name__}: {str(exc)[:160]}", lease=f"{lease_id:x}"
                )
                await asyncio.sleep(retry_pause(held.ttl or 3 * self.conn.timeout))
                continue
            held.outage.success(lease=f"{lease_id:x}")
            ttl = granted_ttl(reply)
            if ttl <= 0:  # gone already (expired before we came): its keys with it
                self._drop(lease_id, held, "expired")
                return
            if held.ttl == 0:
                event(log, "etcd_leftover_lease_kept", lease=f"{lease_id:x}", ttl=ttl)
            held.ttl, held.expires_at = ttl, sent + ttl
            await asyncio.sleep(keepalive_interval(ttl))

    async def _vouched(self, lease_id: int, held: _Held, wait: float) -> str:
        """``renew`` when every key on the lease is held by one of our holders; ``wait``
        while a reporter still reading its key may claim the others; else ``foreign_key``
        (renewing would keep a key nobody vouches for: another record, a moved or removed
        service) or ``expired``."""
        ttl, keys = await self.conn.with_client(
            lambda c: self._keys(c, lease_id), wait, probe=False
        )
        if ttl < 0:  # -1: unknown to etcd (0 is less than a second left: renew it)
            return "expired"
        claimed = {self._claims.get(holder) for holder in held.holders}
        foreign = [key for key in keys if key not in claimed]
        if not foreign:
            return "renew"
        if self._pending:
            return "wait"
        if not held.refused:  # (once per lease: it is looked at again every PENDING_PAUSE)
            event(log, "etcd_leftover_lease_not_kept", lease=f"{lease_id:x}",
                  key=foreign[0].decode(errors="replace"), others=len(foreign))  # fmt: skip
        held.refused = True
        return "foreign_key"
