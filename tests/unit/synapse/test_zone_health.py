"""HAProxy's DOWN servers in the zone decision (synapse/zone_health.py, ZoneRouter.down),
with the fake applier: which backends are looked at, the decision's fallback to the local
zone, the way back, and the cache key. Pure: no process, no socket.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest
from applier_fakes import FakeApplier, eventually, make_reconciler, running

from synapse import zone_health
from synapse.reconciler import Reconciler
from synapse.zone_apply import ZoneRouter
from synapse.zone_state import Evacuations

from test_zone_apply import config, fleet_report, weights, zone_total  # isort: skip


class StatesApplier(FakeApplier):
    """``states``: backend -> {server: state} as `show servers state` would label them."""

    def __init__(self) -> None:
        super().__init__()
        self.states: dict[str, dict[str, str]] = {}
        self.asked: list[str] = []
        self.batches = 0

    async def servers_of(self, backends: Sequence[str]) -> dict[str, dict[str, str] | None]:
        self.batches += 1
        self.asked += backends
        return {backend: self.states.get(backend) for backend in backends}


def server_names(applier: FakeApplier, zone: str) -> list[str]:
    return sorted(s.name for d in applier.applied[-1] if d.name == "web" for s in d.servers
                  if s.name.startswith(zone))  # fmt: skip


async def test_a_dead_spill_zone_gives_the_traffic_back_to_the_local_zone(tmp_path: Path) -> None:
    applier = StatesApplier()
    rec = make_reconciler(config(tmp_path), applier)
    async with running(rec, applier, fleet_report(az1=2, az2=2)):
        assert await zone_health.look(rec.zones, applier, local=False) == []
        assert applier.asked == [], "the local zone serves: read only every LOCAL_S"
        rec.zones.evacuations = Evacuations().evacuate("az1")
        rec.wake("test")
        await eventually(lambda: zone_total(applier.applied[-1], "az1") == 0, what="the spill")
        assert rec.zones.watched() == {"web": "web"}
        az2 = server_names(applier, "az2")
        applier.states["web"] = {name: "DOWN" for name in az2}  # its records are kept
        count = len(applier.applied)
        assert await zone_health.look(rec.zones, applier) == ["web"]
        rec.wake(zone_health.REASON, select=False)
        await eventually(lambda: len(applier.applied) > count, what="the hand-over")
        assert zone_total(applier.applied[-1], "az1") == 512, weights(applier.applied[-1])
        assert zone_total(applier.applied[-1], "az2") == 0
        status = rec.zones.status()["web"]
        assert status["mode"] == "evacuated_fallback" and status["haproxy_down"] == az2
        assert await zone_health.look(rec.zones, applier) == [], "nothing new"

        applier.states["web"] = {name: "UP" for name in az2}  # its checks bring it back
        count = len(applier.applied)
        assert await zone_health.look(rec.zones, applier) == ["web"]
        rec.wake(zone_health.REASON, select=False)
        await eventually(lambda: len(applier.applied) > count, what="the hand-over")
        assert zone_total(applier.applied[-1], "az1") == 0
        assert zone_total(applier.applied[-1], "az2") == 512
        assert "haproxy_down" not in rec.zones.status()["web"]


async def test_a_dead_local_zone_with_lingering_records_is_not_reported_local(
    tmp_path: Path,
) -> None:
    """az1 killed, its records kept (session, lease TTL) or hung: HAProxy has its servers
    DOWN and the backups answer everything. /status said mode local, share az1 1.0 and
    no haproxy_down until the records went (forever for a hung zone). The backups keep
    their weights: counting az1 out moves no traffic, it makes the decision true."""
    applier = StatesApplier()
    rec = make_reconciler(config(tmp_path), applier)
    async with running(rec, applier, fleet_report(az1=2, az2=2)):
        assert rec.zones.status()["web"]["mode"] == "local"
        before = {s.name: s.weight for d in applier.applied[-1] for s in d.servers
                  if s.name.startswith("az2")}  # fmt: skip
        az1 = server_names(applier, "az1")
        applier.states["web"] = {**dict.fromkeys(az1, "DOWN"),
                                 **dict.fromkeys(server_names(applier, "az2"), "UP")}  # fmt: skip
        assert await zone_health.look(rec.zones, applier, local=False) == [], "not this look"
        count = len(applier.applied)
        assert await zone_health.look(rec.zones, applier) == ["web"]
        rec.wake(zone_health.REASON, select=False)
        await eventually(lambda: len(applier.applied) > count, what="the hand-over")
        status = rec.zones.status()["web"]
        assert status["mode"] != "local" and status["haproxy_down"] == az1, status
        assert status["share"].get("az1", 0) == 0 and status["share"]["az2"] == 1.0, status
        after = {s.name: s.weight for d in applier.applied[-1] for s in d.servers
                 if s.name.startswith("az2")}  # fmt: skip
        assert after == before, "the backups already served with these weights"
        assert rec.zones.watched(local=False) == {"web": "web"}, "read every look now"

        applier.states["web"] = dict.fromkeys(applier.states["web"], "UP")  # az1 back
        count = len(applier.applied)
        assert await zone_health.look(rec.zones, applier, local=False) == ["web"]
        rec.wake(zone_health.REASON, select=False)
        await eventually(lambda: len(applier.applied) > count, what="the hand-over")
        status = rec.zones.status()["web"]
        assert status["mode"] == "local" and "haproxy_down" not in status, status


async def test_every_server_down_keeps_the_registry_weights(tmp_path: Path) -> None:
    """Nothing left to count on: the weights stay, so the first server HAProxy's checks
    bring back serves at once (not only after the next look)."""
    applier = StatesApplier()
    rec = make_reconciler(config(tmp_path, min_local=2), applier)
    async with running(rec, applier, fleet_report(az1=1, az2=2)):  # az1 below min_local
        before = weights(applier.applied[-1])
        assert rec.zones.status()["web"]["mode"] == "spill"
        everything = [s.name for d in applier.applied[-1] if d.name == "web" for s in d.servers]
        applier.states["web"] = {name: "DOWN" for name in everything}
        assert await zone_health.look(rec.zones, applier) == ["web"]
        assert weights(rec.desired()) == before
        assert rec.zones.status()["web"]["mode"] == "spill"


async def test_the_down_set_is_part_of_the_decision_cache(tmp_path: Path) -> None:
    applier = StatesApplier()
    rec = make_reconciler(config(tmp_path, min_local=2), applier)
    async with running(rec, applier, fleet_report(az1=1, az2=2)):
        first = rec.desired()
        assert rec.desired()[0] is first[0], "the same inputs: the same object"
        rec.zones.down["web"] = frozenset(server_names(applier, "az2"))
        moved = rec.desired()[0]
        assert moved is not first[0]
        assert rec.zones.status()["web"]["mode"] == "local_below_min"
        assert zone_total([moved], "az1") == 256 and zone_total([moved], "az2") == 0


async def test_a_backend_haproxy_does_not_answer_for_keeps_its_set(tmp_path: Path) -> None:
    applier = StatesApplier()
    rec = make_reconciler(config(tmp_path, min_local=2), applier)
    async with running(rec, applier, fleet_report(az1=1, az2=2)):
        rec.zones.down["web"] = frozenset({"az2-0"})
        assert await zone_health.look(rec.zones, applier) == []  # (states: None)
        assert rec.zones.down["web"] == {"az2-0"} and applier.asked == ["web"]


async def test_one_look_reads_every_watched_backend_in_one_batch() -> None:
    """A global evacuation of the local zone puts every zone-routed service into spill: a
    look is one read of all their backends (one round trip), not one read after another."""
    names = [f"s{i:03d}" for i in range(200)]
    router = SimpleNamespace(watched=lambda local=True: {name: f"b_{name}" for name in names},
                             decisions=dict.fromkeys(names), down={})  # fmt: skip
    applier = StatesApplier()
    applier.states = {f"b_{name}": {"a": "UP", "b": "DOWN"} for name in names}
    assert await zone_health.look(cast(ZoneRouter, router), applier) == names
    assert applier.batches == 1 and sorted(applier.asked) == [f"b_{name}" for name in names]
    assert router.down == dict.fromkeys(names, frozenset({"b"}))
    assert await zone_health.look(cast(ZoneRouter, router), applier) == []
    assert applier.batches == 2


async def test_a_stranded_spill_is_looked_at_every_fast_s(tmp_path: Path) -> None:
    """az1 evacuated, az2 serving as HAProxy's backups: should az2 die, HAProxy has no server
    with a weight (az1's sit at 0, never picked, not even by a retry) and answers 503 until
    a look gives az1 its weights back: 60-73 of ~2,300 requests failed at looks every 0.5 s
    (review s38). Such a service is looked at every FAST_S; a local zone that serves, or one
    that is dead too (nothing to fall back to), keeps the slower pace."""
    applier = StatesApplier()
    rec = make_reconciler(config(tmp_path, min_local=2), applier)
    async with running(rec, applier, fleet_report(az1=2, az2=2)):
        assert not rec.zones.stranded() and zone_health.pause(rec.zones) == zone_health.POLL_S
        rec.zones.evacuations = Evacuations().evacuate("az1")
        rec.wake("test")
        await eventually(lambda: zone_total(applier.applied[-1], "az1") == 0, what="the spill")
        assert rec.zones.stranded() and zone_health.pause(rec.zones) == zone_health.FAST_S

        az1 = server_names(applier, "az1")
        rec.zones.down["web"] = frozenset(az1)  # az1 dead in HAProxy as well: no way back
        rec.desired()
        assert rec.zones.status()["web"]["mode"] == "spill"
        assert not rec.zones.stranded() and zone_health.pause(rec.zones) == zone_health.POLL_S

        rec.zones.evacuations = Evacuations()  # az1 restored, one server DOWN: below min_local
        rec.zones.down["web"] = frozenset(az1[:1])
        rec.desired()
        assert rec.zones.status()["web"]["mode"] == "spill"
        assert rec.zones.stranded(), "az1's other server waits at weight 0"


async def test_the_watch_sleeps_fast_s_while_a_service_is_stranded(monkeypatch) -> None:
    pauses: list[float] = []

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)
        if len(pauses) == 2:
            raise asyncio.CancelledError

    states = iter([True, False])
    router = SimpleNamespace(watched=lambda local=True: {}, stranded=lambda: next(states))
    monkeypatch.setattr(zone_health, "asyncio", SimpleNamespace(sleep=sleep))
    with pytest.raises(asyncio.CancelledError):
        await zone_health.watch(cast(Reconciler, SimpleNamespace(zones=router, applier=None)))
    assert pauses == [zone_health.FAST_S, zone_health.POLL_S]


async def test_the_watch_paces_on_the_looks_cpu_not_on_its_wait(monkeypatch) -> None:
    """A look at 1,000 stranded services waited ~25 ms for HAProxy, and the watch slept 20
    times that: a look every ~0.6 s, not FAST_S (review s39). The pace counts the loop's CPU
    (PACE: ~5 % of it at most), not the wait for HAProxy's answer."""
    clock = SimpleNamespace(wall=0.0, cpu=0.0)
    costs = iter([0.001, 0.001, 0.01])  # the CPU of each look; each waits 0.05 s of wall

    async def look(router: object, applier: object, local: bool = True) -> list[str]:
        clock.wall += 0.05
        clock.cpu += next(costs)
        return []

    pauses: list[float] = []

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)
        if len(pauses) == 3:
            raise asyncio.CancelledError

    monkeypatch.setattr(zone_health, "look", look)
    monkeypatch.setattr(zone_health, "asyncio", SimpleNamespace(sleep=sleep))
    clocks = SimpleNamespace(monotonic=lambda: clock.wall, thread_time=lambda: clock.cpu)
    monkeypatch.setattr(zone_health, "time", clocks)
    router = SimpleNamespace(stranded=lambda: True)
    with pytest.raises(asyncio.CancelledError):
        await zone_health.watch(cast(Reconciler, SimpleNamespace(zones=router, applier=None)))
    assert pauses[:2] == [zone_health.FAST_S] * 2
    assert pauses[2] == pytest.approx(zone_health.PACE * 0.01)
