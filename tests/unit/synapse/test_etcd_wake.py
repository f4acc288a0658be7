"""Watchers sleeping their retry backoff wake when their etcd connection recovers (after
a random delay of up to ``relist_jitter``), instead of finishing a backoff grown to a
minute during a long outage (no etcd: fake connections and calls)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator

import pytest
from synapse_testlib import Collector, eventually, metrics, service_config
from test_etcd_watch_outage import DownConnection

from smartstack import etcd_json, etcd_wake
from smartstack.etcd_json import EtcdJsonConnection
from smartstack.etcd_wake import RecoveryWake
from synapse.watchers.base import WatcherContext
from synapse.watchers.etcd import EtcdWatcher


@contextlib.asynccontextmanager
async def asleep_in_backoff(
    relist_jitter: float,
) -> AsyncIterator[tuple[DownConnection, EtcdWatcher]]:
    """A watcher whose list failed (its connection down), asleep in retry_policy's backoff
    grown to 10 s (5-10 s); stopped on the way out."""
    conn = DownConnection()
    ctx = WatcherContext(loop=asyncio.get_running_loop(), metrics=metrics(),
                         etcd_connection=lambda discovery: conn)  # type: ignore[arg-type,return-value]  # fmt: skip
    discovery = {"method": "etcd", "endpoints": ["127.0.0.1:1"], "path": "/svc/web",
                 "relist_jitter": relist_jitter,
                 "retry_policy": {"base_interval": 10, "max_interval": 10}}  # fmt: skip
    watcher = EtcdWatcher("web", service_config(discovery), Collector(), ctx)
    await watcher.start()
    try:
        await eventually(lambda: watcher.last_error is not None, what="the failed list")
        await asyncio.sleep(0.1)  # asleep in its backoff
        yield conn, watcher
    finally:
        await watcher.stop()


async def test_a_recovery_ends_the_sleep_after_the_jitter_and_only_then() -> None:
    wake = RecoveryWake(lambda: asyncio.sleep(0))
    started = time.monotonic()
    assert await wake.sleep(0.05, jitter=0) is False  # nothing recovered: the whole sleep
    assert time.monotonic() - started >= 0.05
    sleepers = [asyncio.ensure_future(wake.sleep(30, jitter=0.2)) for _ in range(5)]
    await asyncio.sleep(0.05)
    assert not any(s.done() for s in sleepers)
    started = time.monotonic()
    wake.recovered()
    assert await asyncio.wait_for(asyncio.gather(*sleepers), 2) == [True] * 5
    assert time.monotonic() - started <= 0.5
    assert wake.wakes == 1
    wake.recovered()  # nobody sleeps: nothing to wake, and the next sleep is not cut short
    assert wake.wakes == 1
    assert await wake.sleep(0.05, jitter=0) is False


async def test_a_failing_connection_is_probed_while_watchers_sleep(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Nothing else calls a connection whose watchers all sleep: one probe per interval
    (not per watcher) finds it answering again, and the sleepers wake."""
    monkeypatch.setattr(etcd_wake, "PROBE_EVERY", 0.05)
    probes = 0

    async def probe() -> None:
        nonlocal probes
        probes += 1
        if probes < 3:
            raise ConnectionError("no answer")
        wake.answered(prompt=probes > 3)  # the third one answered, but slowly

    wake = RecoveryWake(probe)
    wake.failed()
    sleepers = [asyncio.ensure_future(wake.sleep(30, jitter=0.05)) for _ in range(20)]
    assert await asyncio.wait_for(asyncio.gather(*sleepers), 3) == [True] * 20
    assert probes == 5  # two prompt answers an interval apart: a stable recovery
    await asyncio.sleep(0.3)
    assert probes == 5  # recovered: no more probes
    await wake.close()


async def test_no_probe_while_the_connection_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    """A watcher refused by an answering etcd keeps its backoff: no probe, no wake."""
    monkeypatch.setattr(etcd_wake, "PROBE_EVERY", 0.01)
    probes = []
    wake = RecoveryWake(lambda: probes.append(1) or asyncio.sleep(0))
    wake.answered(prompt=True)  # (never failed over)
    assert await wake.sleep(0.1, jitter=0) is False
    assert probes == []


async def test_the_json_connection_wakes_its_sleepers_once_it_answers_promptly_again(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(etcd_wake, "PROBE_EVERY", 0.1)
    caplog.set_level("INFO", "smartstack.etcd")
    conn = EtcdJsonConnection(["127.0.0.1:1"], start=0, timeout=0.4)
    answers = ["fail", "slow", "ok", "ok", "ok"]

    async def call(_target: object, _turn: object) -> str:
        answer = answers.pop(0)
        if answer == "fail":
            raise ConnectionError("refused")
        if answer == "slow":  # beyond half the timeout: a gray link, not a recovery
            await asyncio.sleep(0.25)
        return "ok"

    async def answered() -> str:
        return await conn.with_endpoint(call)

    sleeper = asyncio.ensure_future(conn.wake.sleep(30, jitter=0))
    await asyncio.sleep(0)
    with pytest.raises(ConnectionError):
        await answered()  # the only endpoint failed: an outage starts
    assert not sleeper.done()
    assert await answered() == "ok"  # etcd_recovered, slowly: no wake
    await asyncio.sleep(0.05)
    assert not sleeper.done()
    assert [r.getMessage() for r in caplog.records].count("etcd_recovered") == 1
    assert await answered() == "ok"  # promptly, but once: not yet stable
    await asyncio.sleep(0.1)
    assert not sleeper.done()
    assert await answered() == "ok"  # promptly again, an interval later
    assert await asyncio.wait_for(sleeper, 1) is True
    late = asyncio.ensure_future(conn.wake.sleep(0.05, jitter=0))
    assert await answered() == "ok"  # no outage: no wake
    assert await late is False
    await conn.close()


async def test_a_watcher_deep_in_its_backoff_lists_soon_after_the_connection_recovers() -> None:
    """retry_policy's backoff grown to 10 s: the watcher lists within relist_jitter of the
    recovery, not at the end of it (before: 5-10 s later)."""
    async with asleep_in_backoff(relist_jitter=0.3) as (conn, watcher):
        conn.down = False
        started = time.monotonic()
        conn.wake.recovered()
        await eventually(lambda: watcher.connected, timeout=3, what="listing again")
        assert time.monotonic() - started <= 1.0


async def test_a_probe_still_waiting_when_another_call_recovers_is_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Its late failure would move the connection off the endpoint that just answered."""
    monkeypatch.setattr(etcd_wake, "PROBE_EVERY", 0.01)
    started, ended, probes = asyncio.Event(), [], []

    async def probe() -> None:
        probes.append(1)
        started.set()
        try:
            await asyncio.sleep(30)  # unanswered, as on a slow link
        finally:
            ended.append(asyncio.current_task().cancelling())  # type: ignore[union-attr]

    wake = RecoveryWake(probe)
    wake.failed()
    sleeper = asyncio.ensure_future(wake.sleep(30, jitter=0))
    await asyncio.wait_for(started.wait(), 2)
    wake.answered(prompt=True)  # a watcher's own call was answered
    await asyncio.sleep(0.05)
    assert ended == [1]  # cancelled, not failed late
    assert not sleeper.done()  # answered once: not yet stable
    assert len(probes) == 2  # a fresh probe goes out to confirm
    wake.answered(prompt=True)  # an interval later
    assert await asyncio.wait_for(sleeper, 1) is True
    await asyncio.sleep(0.05)
    assert ended == [1, 1]
    await wake.close()


async def test_a_probe_that_waited_out_its_timeout_is_followed_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Sent on the slow link just before it healed, it fails after the connection's timeout:
    the next one goes out then, not an interval later."""
    monkeypatch.setattr(etcd_wake, "PROBE_EVERY", 1.0)
    starts: list[float] = []

    async def probe() -> None:
        starts.append(time.monotonic())
        if len(starts) == 1:
            await asyncio.sleep(1.3)  # (the connection's timeout: past any drawn interval)
            raise TimeoutError("no answer")
        wake.answered(prompt=True)

    wake = RecoveryWake(probe)
    wake.failed()
    sleeper = asyncio.ensure_future(wake.sleep(30, jitter=0))
    await eventually(lambda: len(starts) >= 2, timeout=5, what="the second probe")
    # The interval (1.0 s x 0.75-1.25) less the 1.3 s the probe took: at once, 1.3 s after
    # it began; an interval more would be >= 2.05 s. 0.5 s over for a stall of this loaded
    # process (with a 0.3 s interval and 0.6 s, 0.25 s: 0.9 s seen under 0.3 s stalls).
    assert starts[1] - starts[0] < 1.8
    sleeper.cancel()
    await wake.close()


async def test_a_refused_probe_ends_the_probing_and_wakes_no_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """etcd back but the password wrong: each probe would be a login (bcrypt) every 2 s per
    connection, for ever (before: 221 logins in 90 s instead of 44)."""
    monkeypatch.setattr(etcd_wake, "PROBE_EVERY", 0.02)
    probes = []

    async def probe() -> None:
        probes.append(1)
        raise etcd_wake.ProbeRefused("authentication failed, invalid user ID or password")

    wake = RecoveryWake(probe)
    wake.failed()
    assert await wake.sleep(0.5, jitter=0) is False  # its own backoff: not woken
    assert probes == [1]
    await wake.close()


async def test_failed_probes_back_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(etcd_wake, "PROBE_EVERY", 0.02)
    monkeypatch.setattr(etcd_wake, "PROBE_MAX", 0.16)
    monkeypatch.setattr(etcd_wake, "PROBE_STEADY", 1)
    starts: list[float] = []
    every: list[float] = []  # the interval drawn from (x 0.75-1.25) before each probe

    async def probe() -> None:
        starts.append(time.monotonic())
        every.append(wake._probe_every)
        raise ConnectionError("no answer")

    wake = RecoveryWake(probe)
    wake.failed()
    assert await wake.sleep(2.0, jitter=0) is False
    # The backoff as designed: doubled after each failed probe, up to PROBE_MAX, whatever the
    # loop's lateness. (The gaps on the clock hold that lateness too: a stall of this process
    # on a loaded machine lengthened one to 0.34 s against a bound of 0.16 x 1.25 + 0.05 s.)
    assert every[:5] == [0.02, 0.04, 0.08, 0.16, 0.16] and set(every[3:]) == {0.16}, every
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert all(gap >= 0.75 * e - 0.001 for gap, e in zip(gaps, every[1:], strict=False)), gaps
    # As drawn, 12-18 probes in the 2 s (every 0.02 s: ~100); a stall only removes some.
    assert 5 <= len(starts) <= 18
    await wake.close()


async def test_a_flapping_connection_wakes_no_one_on_a_single_prompt_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Up for one probe, down again: the sleepers keep their backoff (before: every up
    spell woke them all, 180 relists in 61 s instead of 38)."""
    monkeypatch.setattr(etcd_wake, "PROBE_EVERY", 0.02)
    monkeypatch.setattr(etcd_wake, "PROBE_MAX", 0.02)
    probes = 0

    async def probe() -> None:
        nonlocal probes
        probes += 1
        if probes % 2:
            wake.failed()
            raise ConnectionError("no answer")
        wake.answered(prompt=True)

    wake = RecoveryWake(probe)
    wake.failed()
    # Four up spells, however long the loop takes to see them (0.4 s of sleep gave fewer
    # when a stall of this loaded process took half of it: 5 probes against 8).
    sleeping = asyncio.ensure_future(wake.sleep(30, jitter=0))
    await eventually(lambda: probes >= 8, what="four up spells")
    assert not sleeping.done()  # (before: woken at the first; then no more probes)
    sleeping.cancel()
    await wake.close()


async def test_the_json_wake_probe_asks_the_status_without_logging_in(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    paths: list[tuple[str, dict]] = []

    async def call(target: object, path: str, body: object) -> dict:
        paths.append((path, dict(getattr(target, "headers", {}))))
        if path == "/v3/auth/authenticate":
            raise etcd_json.HttpStatusError(400, "authentication failed")
        return {"leader": "1"}

    monkeypatch.setattr(etcd_json, "call", call)
    conn = EtcdJsonConnection(["127.0.0.1:1"], start=0, timeout=0.4, username="u", password="p")
    await conn._wake_probe()
    assert paths == [(etcd_json.STATUS_PATH, {})]
    await conn.close()


async def test_the_grpc_wake_probe_rotates_only_if_the_endpoint_probe_fails_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A timed-out wake probe on a gray link must not close the client the live watches
    share unless with_client's endpoint probe finds it dead (probe=True); a refused login
    is ProbeRefused."""
    import aetcd

    from smartstack.etcd import EtcdConnection

    kwargs: list[dict] = []

    async def with_client(fn: object, **kw: object) -> object:
        kwargs.append(kw)
        raise aetcd.exceptions.UnauthenticatedError("authentication failed")

    conn = EtcdConnection(["127.0.0.1:1"], timeout=0.4)
    monkeypatch.setattr(conn, "with_client", with_client)
    with pytest.raises(etcd_wake.ProbeRefused):
        await conn._wake_probe()
    assert kwargs and kwargs[0].get("probe", True) is True
    await conn.close()


async def test_a_watch_lost_again_soon_after_a_wake_sleeps_its_whole_backoff() -> None:
    """A flapping member: one early wake per watcher per WAKE_SETTLE s (before: woken at
    every up spell, 180 relists in 61 s against 38 without the wake)."""
    async with asleep_in_backoff(relist_jitter=0.05) as (conn, watcher):
        conn.down = False
        conn.wake.recovered()
        await eventually(lambda: watcher.connected, timeout=3, what="listing again")
        listings = conn.listings
        conn.watches[-1].fail(RuntimeError("watch ended"))  # lost again at once
        await eventually(lambda: not watcher.connected, what="the lost watch")
        await asyncio.sleep(0.1)
        conn.wake.recovered()  # up again
        await asyncio.sleep(0.5)
        assert not watcher.connected and conn.listings == listings  # its backoff: 5-10 s
