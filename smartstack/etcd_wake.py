"""Waking the watchers that sleep their retry backoff when their etcd connection recovers.

A watcher whose watch failed sleeps its jittered backoff (``retry_policy``, up to
``max_interval``: a minute by default) before it lists again. After a long outage or slow
spell the backoff has grown to that minute, and nothing ended it early when etcd answered
again: a change made meanwhile arrived up to a minute after the heal (measured: a
withdrawn instance kept in HAProxy 11.8 s after a 150 s slow link healed, 29 s after a
67 s stall; ZooKeeper's watchers, woken by their session's reconnection: 0.0 s).

So once a connection has failed over (or reconnected) and its calls have been answered
promptly (within half its timeout) twice ~``PROBE_EVERY`` apart, every watcher sleeping
on it wakes (one prompt answer is not enough: a flapping member woke them all at each up
spell), each after a random delay of
up to its ``relist_jitter`` (2 s by default, as ZooKeeper's: a fleet's re-lists are spread,
not all at once). A slow answer (a gray link, an overloaded etcd) ends the outage in the
log (``etcd_recovered``) but wakes no one: the backoff is what protects etcd then (woken
at every slow answer, the watchers of a 3 s-latency link failed 23 attempts in 150 s
instead of 16). While watchers sleep on a connection not answered promptly since it
failed, nothing else may call it: one small probe (a member status call, through the
connection's ordinary path, so that it fails over to the next endpoint when it gets no
answer) goes out every ``PROBE_EVERY`` s (doubling after ``PROBE_STEADY`` failed ones,
up to ``PROBE_MAX``), one per connection whatever the number of watchers, until the connection
has recovered, a probe is refused (``ProbeRefused``: the member is up), or no watcher
sleeps. A watcher that failed while
the connection answers (etcd refused it, a busy etcd's timeout: no failover) is not woken.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

from smartstack.backoff import spread
from smartstack.tasks import cancel_and_wait

PROBE_EVERY = 2.0  # seconds between probes of a failed connection while watchers sleep
PROBE_MAX = 30.0  # the interval doubles after each failed probe beyond PROBE_STEADY,
PROBE_STEADY = 3  # up to this (a short outage keeps the 2 s probe: a prompt wake)
# A watcher woken early whose watch is lost again within this many seconds (a flapping
# member: woken at every up spell, 10 connections x 3 watchers relisted 180 times in 61 s,
# not 38) sleeps its whole backoff, grown on from where the wake cut it.
WAKE_SETTLE = 30.0


class ProbeRefused(Exception):
    """The probe was answered with a refusal (a login refused, permission denied): the
    member is up. Nothing to wake: the watchers' own calls would be refused too, so they
    keep their backoff; and no more probes (each would be a login: etcd's bcrypt check)."""


class RecoveryWake:
    """``sleep``: a watcher's backoff, ended when the connection, ``failed`` since, is
    ``answered`` promptly. ``probe()``: one call through the connection (which then says
    ``answered`` or ``failed``)."""

    def __init__(self, probe: Callable[[], Awaitable[object]]) -> None:
        self._probe = probe
        self._down = False  # failed over, and not answered promptly since
        self._prompt_since: float | None = None  # the first prompt answer while down
        self._recovered: asyncio.Future[None] | None = None  # what the sleepers wait for
        self._sleepers = 0
        self._task: asyncio.Task[None] | None = None
        self._probe_every = PROBE_EVERY  # doubled after PROBE_STEADY failed probes
        self.wakes = 0  # recoveries that found sleepers

    def failed(self) -> None:
        """The connection failed over or reconnects (a call got no answer)."""
        self._down = True
        self._prompt_since = None

    def answered(self, prompt: bool) -> None:
        """A call was answered (``prompt``: well within the connection's timeout). The
        sleepers wake once answers have been prompt for ``PROBE_EVERY`` s: a flapping
        member's short up spells wake no one (woken at each, 10 connections x 3 watchers
        relisted 180 times in 61 s, not 38)."""
        if not (prompt and self._down):
            return
        now = asyncio.get_running_loop().time()
        if self._prompt_since is None:
            self._prompt_since = now
            self._probe_every = PROBE_EVERY
            if self._drop_probe() and self._sleepers:
                self._start()  # a fresh probe, PROBE_EVERY from now, to confirm
            return
        if now - self._prompt_since >= PROBE_EVERY * 0.75:  # (the probe interval's jitter)
            self._down = False
            self._prompt_since = None
            self.recovered()

    def refused(self) -> None:
        """The probe was refused by an answering member (``ProbeRefused``): stop probing."""
        self._down = False
        self._prompt_since = None

    def recovered(self) -> None:
        """The connection is back: wake the sleepers (each after its jitter)."""
        future, self._recovered = self._recovered, None
        if future is not None and not future.done():
            self.wakes += 1
            future.set_result(None)
        self._drop_probe()

    def _drop_probe(self) -> bool:
        """Cancel a probe in flight (unless it is the caller). True if one was."""
        task = self._task
        if task is not None and not task.done() and task is not asyncio.current_task():
            # A probe sent during the outage that times out now would move the connection
            # off the endpoint that just answered, ending the watches made there (seen once:
            # every watch lost and listed again 2 s after the heal).
            task.cancel()
            self._task = None
            return True
        return False

    async def sleep(self, seconds: float, jitter: float) -> bool:
        """Sleep ``seconds``, or until the connection recovers and then 0..``jitter`` s
        more (never beyond ``seconds``). True when woken early."""
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        if self._recovered is None:
            self._recovered = loop.create_future()
        recovered = self._recovered
        self._sleepers += 1
        try:
            if seconds > PROBE_EVERY and self._down:
                self._start()
            # asyncio.wait does not cancel the shared future when this sleeper is cancelled.
            done, _ = await asyncio.wait([recovered], timeout=seconds)
        finally:
            self._sleepers -= 1
        if not done:
            return False
        await asyncio.sleep(max(0.0, min(spread(jitter), end - loop.time())))
        return True

    def _start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        took, failures = 0.0, 0
        self._probe_every = PROBE_EVERY
        while self._sleepers and self._down:
            # From one probe's start to the next: a probe that waited out the connection's
            # timeout (sent on the slow link just before it healed) is followed at once,
            # not after another interval (seen: the wake 4 s after the heal instead of ~1).
            every = self._probe_every * random.uniform(0.75, 1.25)
            await asyncio.sleep(max(0.0, every - took))
            if not (self._sleepers and self._down):
                break
            started = loop.time()
            # Its failure is the connection's to log (etcd_failover, once per outage); its
            # prompt answers call answered(), which wakes the sleepers.
            try:
                await self._probe()
            except ProbeRefused:
                self.refused()
            except Exception:
                # A longer outage: fewer probes (up to one per PROBE_MAX s).
                failures += 1
                if failures >= PROBE_STEADY:
                    self._probe_every = min(PROBE_MAX, self._probe_every * 2)
            took = loop.time() - started

    async def close(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)
