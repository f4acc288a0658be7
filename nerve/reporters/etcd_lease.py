"""One etcd lease per cluster, shared by every service that registers there.

aetcd does not refresh leases by itself: this keeper sends a keep-alive every ttl/6
(``KEEPALIVES_PER_TTL``), so etcd has heard from us at most a sixth of the TTL before a
stall begins: a stall of up to ~5/6 of the TTL keeps the lease. A keep-alive to a member
that hangs (a stalled host, a network blackhole) times out after ``keepalive_timeout`` and
goes to the next member at once, unprobed: the lease is renewed by half the TTL (plus a
connection) in the worst case, half of it to spare.
The keep-alive that timed out is not cancelled (``_renew``): on a slow, lossy link its
answer is only late, and the first answer of any renews the lease.
Listeners hear:
- "lost": the lease expired (etcd unreachable for longer than the TTL, or an etcd
  restart without it): its keys are gone; reporters re-register under a new lease. Also
  when keep-alives kept failing past our own estimate of its expiry (``expires_at``): etcd
  has dropped it by now, and saying "registered" meanwhile would be a lie.
- "reconnected": etcd answers again after failed keep-alives and the lease survived;
  reporters re-put their keys so the registry holds the current truth.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from nerve.metrics import NerveMetrics
from smartstack.logs import FailureStreak, event
from smartstack.tasks import cancel_and_wait, retryable

if TYPE_CHECKING:
    from nerve.reporters.etcd_leftover import LeftoverLeases
    from smartstack.etcd import EtcdConnection
    from smartstack.etcd_json_client import EtcdJsonKVConnection

    Connection = EtcdConnection | EtcdJsonKVConnection

log = logging.getLogger("nerve.etcd")

LeaseListener = Callable[[str], None]
RETRY_INTERVAL_MAX = 1.0  # keep-alive retry cadence while etcd does not answer
# Every third of the TTL (as before) lost the lease to a stall of 2/3 of it: etcd may have
# heard nothing for that third when the stall began (TTL 5, 60 ms away, a 4 s stall: the
# lease lost in 10 of 22 stalls). A sixth: a stall of ~5/6 is ridden out, for twice the
# keep-alives (one per 0.83 s with the default TTL of 5 s).
KEEPALIVES_PER_TTL = 6
LAST_KEEPALIVE = 0.5  # seconds at most, for a lease left by a restart stop (close)


def keepalive_interval(ttl: float) -> float:
    """Seconds from one keep-alive to the next for a lease of ``ttl`` seconds."""
    return ttl / KEEPALIVES_PER_TTL


def call_timeout(ttl: float) -> float:
    """The etcd connection's per-call timeout for a lease of ``ttl`` seconds: a keep-alive
    sent ttl/6 after the last one that times out on a hung member leaves half the TTL for
    the next member (``worst_renewal``)."""
    return min(3.0, ttl / 3)


def keepalive_timeout(per_call: float, ttl: float, remaining: float) -> float:
    """How long one keep-alive may wait on a member: the connection's ``per_call`` timeout, not
    past a third of the TTL before the lease expires (``remaining``: seconds left), so the
    next member has that third to answer. A regular keep-alive (ttl/6 after the last, 5/6 of
    the TTL left) waits ``per_call`` (at most ttl/3). A late one (after every member failed) still
    waits a third of ``per_call``: an etcd that is back but slow must be able to answer."""
    return max(per_call / 3, min(per_call, remaining - ttl / 3))


def retry_pause(ttl: float) -> float:
    """The pause after a keep-alive that every member failed, for a lease of ``ttl``
    seconds: a sixth of it, at most RETRY_INTERVAL_MAX, so the lease gets several more
    tries before it runs out (as often as when keep-alives went every third of the TTL:
    keep-alives doubled, retries did not)."""
    return min(ttl / 6, RETRY_INTERVAL_MAX)


def worst_renewal(ttl: float, per_call: float) -> float:
    """Seconds from a renewal to the next one when the member in use hangs right after it:
    an interval, a keep-alive that times out, then the next member (plus its connection)."""
    interval = keepalive_interval(ttl)
    return interval + keepalive_timeout(per_call, ttl, ttl - interval)


class LeaseKeeper:
    def __init__(self, conn: Connection, ttl: int, metrics: NerveMetrics | None = None) -> None:
        self.conn = conn
        self.ttl = ttl
        self.interval = keepalive_interval(ttl)
        self.metrics = metrics
        self.lease_id: int | None = None
        self.expires_at = 0.0  # monotonic, our estimate: from the last renewal's sending
        self.reachable = True
        self._listeners: list[LeaseListener] = []
        self._grant_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._outage = FailureStreak(log, "etcd_keepalive_failed", "etcd_reachable_again")
        # A previous run's leases its reporters still hold keys on (set by the registries).
        self.leftovers: LeftoverLeases | None = None

    def add_listener(self, listener: LeaseListener) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: LeaseListener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._keepalive_forever(), name=f"etcd-lease-{self.conn.endpoints[0]}"
            )

    async def lease(self) -> int:
        """The current lease id, granting a new lease when there is none."""
        async with self._grant_lock:
            if self.lease_id is None:
                asked = time.monotonic()
                granted = await self.conn.with_client(lambda c: c.lease(self.ttl))
                self.lease_id, self.expires_at = granted.id, asked + granted.ttl
                event(log, "etcd_lease_granted", lease=f"{granted.id:x}", ttl=granted.ttl)
            return self.lease_id

    def invalidate(self, lease_id: int, reason: str) -> None:
        """The lease is gone: forget it and tell every reporter that used it."""
        if self.lease_id != lease_id:
            return  # already replaced
        self.lease_id = None
        event(log, "etcd_lease_lost", level=logging.WARNING, lease=f"{lease_id:x}", reason=reason)
        self._count("lease_lost")
        self._emit("lost")

    async def _keepalive_forever(self) -> None:
        pause = self.interval
        while True:
            await asyncio.sleep(pause)
            pause = self.interval if self.reachable else retry_pause(self.ttl)
            lease_id = self.lease_id
            if lease_id is None:
                continue  # nobody registered yet; a reporter grants one when it needs it
            try:
                sent, reply = await self._renew(lease_id)
            except (Exception, asyncio.CancelledError) as exc:  # keep trying: it may survive
                if not retryable(exc):
                    raise  # our own stop (a call cancelled under us is retried)
                self._outage.failure(f"{type(exc).__name__}: {str(exc)[:160]}")
                self.reachable = False
                pause = retry_pause(self.ttl)
                if lease_id == self.lease_id and time.monotonic() > self.expires_at:
                    self._expired(lease_id)
                continue
            # The next one an interval after this one was sent, not after its (late) answer:
            # else a slow answer left the next keep-alive too little of the lease.
            pause = max(0.0, sent + self.interval - time.monotonic())
            was_reachable, self.reachable = self.reachable, True
            ttl_left = getattr(reply, "TTL", 0) if reply is not None else 0
            if ttl_left <= 0:
                self._outage.end()  # etcd is back; the lease is not: etcd_lease_lost says so
                self.invalidate(lease_id, "keep-alive says the lease has expired")
                continue
            if lease_id == self.lease_id:
                self.expires_at = sent + ttl_left
            if not was_reachable:
                self._outage.success(lease=f"{lease_id:x}")
                self._count("reconnected")
                self._emit("reconnected")

    def _expired(self, lease_id: int) -> None:
        """Keep-alives failed until the lease ran out: its keys are gone. The reporters put
        them again on a new lease (granted where the failed calls moved the connection);
        the new lease starts a streak of its own, not a "reconnected" one."""
        self._outage.end()
        self.reachable = True
        self.invalidate(lease_id, "keep-alives failed until it expired")

    async def _renew(self, lease_id: int) -> tuple[float, object]:
        """One renewal: (when the keep-alive that was answered was sent, its reply).

        A keep-alive not answered within ``keepalive_timeout`` gets another beside it, on
        the next member when there is one (a hung member is left in time), and is not
        cancelled: on a slow, lossy link its answer is merely late (a lost packet sent
        again), and cancelling it to ask again, on a new connection, cost the lease (300 ms
        RTT, 1 % loss: 3-4 leases lost in 90 s). The first answer wins; none waits past the
        lease's expiry (or, late already, ``keepalive_timeout``). Raises the last error when
        every keep-alive failed, or TimeoutError when none was answered in time."""
        tries: dict[asyncio.Task[object], tuple[float, str]] = {}  # when sent, where to
        started = time.monotonic()
        give_up = started + max(self.expires_at - started, self._patience(started))
        last: BaseException | None = None
        next_try = started
        try:
            while (now := time.monotonic()) < give_up:
                if now >= next_try:
                    await self._move_on(tries, now)
                    task = asyncio.ensure_future(self._refresh(lease_id, give_up - now))
                    tries[task] = (now, self.conn.current_endpoint)
                    next_try = now + self._patience(now)
                done, _ = await asyncio.wait(set(tries), timeout=min(next_try, give_up) - now,
                                             return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
                for task in done:
                    sent, _where = tries.pop(task)
                    if task.exception() is None:
                        return sent, task.result()
                    last = task.exception()
                if last is not None and not tries:
                    raise last  # every one failed (refused, reset): retried after a pause
            raise TimeoutError(f"no answer to a keep-alive in {give_up - started:.2g} s")
        finally:
            for task in tries:
                task.cancel()
            await asyncio.gather(*tries, return_exceptions=True)

    def _patience(self, now: float) -> float:
        """How long a keep-alive sent ``now`` is alone before another one joins it."""
        return keepalive_timeout(self.conn.timeout, self.ttl, self.expires_at - now)

    async def _move_on(
        self, tries: dict[asyncio.Task[object], tuple[float, str]], now: float
    ) -> None:
        """The latest keep-alive is unanswered: the next one goes to the next member,
        unprobed (a probe would cost the lease). With one member there is nowhere to go: its
        connection stays, and with it the keep-alive on its way."""
        if not tries or len(self.conn.endpoints) == 1:
            return
        sent, endpoint = max(tries.values())
        if self.conn.current_endpoint == endpoint:
            await self.conn.rotate(f"timeout, and not probed (a keep-alive, {now - sent:.2g} s)")

    async def _refresh(self, lease_id: int, limit: float) -> object:
        # Refused by a member without a leader, or failed there: the keep-alive goes to the
        # next member at once (it is idempotent; a probe would cost the lease).
        conn: Any = self.conn  # its client is its transport's: gRPC's or the gateway's
        return await conn.with_client(lambda c: conn.keepalive(c, lease_id), limit, probe=False)

    def _count(self, what: str) -> None:
        if self.metrics is not None:
            self.metrics.reconnects.labels("etcd", what).inc()

    def _emit(self, state: str) -> None:
        for listener in list(self._listeners):
            try:
                listener(state)
            except Exception:
                log.exception("etcd lease listener failed")

    async def close(self, revoke: bool = True) -> None:
        """Stop the keep-alives; ``revoke`` deletes every key attached to the lease at once.
        A lease left unrevoked gets one last keep-alive (at most LAST_KEEPALIVE): the next
        nerve finds it with its whole TTL, not what the last renewal left (down to 5/6)."""
        task, self._task = self._task, None
        await cancel_and_wait(task)
        if self.leftovers is not None:
            await self.leftovers.close()  # never revoked: left to expire
        lease_id, self.lease_id = self.lease_id, None
        try:
            if revoke and lease_id is not None:
                await self.conn.with_client(lambda c: c.revoke_lease(lease_id))
            elif lease_id is not None:  # left (restart stop): its whole TTL for the next nerve
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._refresh(lease_id, LAST_KEEPALIVE), LAST_KEEPALIVE)
        finally:
            await self.conn.close()
