"""A SIGHUP's new watcher starts beside the running one and replaces it at its first
complete report (synapse.watcher_swap): until then the old one's reports count, after it
only the new one's; a new watcher that never reports is said, and the old one follows on."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace
from typing import Any

import pytest

from smartstack.record import Registration
from synapse import watcher_swap
from synapse.config import ServiceConfig
from synapse.model import Found, Report, Sink
from synapse.outgoing_hold import SHRINK_FOLD_S
from synapse.watcher_swap import ServiceWatchers


class FakeWatcher:
    """What ServiceWatchers asks of a watcher: start, stop, its discovery and status."""

    method = "zookeeper"

    def __init__(self, service: str, config: ServiceConfig, sink: Sink) -> None:
        self.service, self.discovery, self.sink = service, config.discovery, sink
        self.running = False
        self.stops = 0
        self.last_error: str | None = None

    async def start(self) -> None:
        self.running = True

    async def stop(self) -> None:
        await asyncio.sleep(0)  # (a real stop waits for its task and connection)
        self.running, self.stops = False, self.stops + 1

    def status(self) -> dict[str, Any]:
        return {"method": self.method, "error": self.last_error}

    def hide_gauges(self) -> None:  # (tests/unit/synapse/test_watcher_swap_gauges.py)
        pass

    def publish_gauges(self) -> None:
        pass

    def send(self, *ports: int, partial: bool = False, zone: str = "az1") -> None:
        found = tuple(Found(Registration("127.0.0.1", p, f"i{p}", labels={"zone": zone}),
                            f"zk:{p}") for p in ports)  # fmt: skip
        self.sink(Report(self.service, self.method, found, partial=partial))


def service(path: str, zone: str | None = None) -> ServiceConfig:
    discovery: dict[str, Any] = {"method": "zookeeper", "hosts": ["127.0.0.1:2181"], "path": path}
    if zone is not None:
        discovery["label_filters"] = [{"label": "zone", "value": zone}]
    return ServiceConfig.model_validate({"discovery": discovery})


class Rig:
    def __init__(self, patience: float = 60.0, serving: bool = False) -> None:
        self.made: list[FakeWatcher] = []
        self.got: list[tuple[int, ...]] = []
        self.reports: list[Report] = []
        self.serving = serving  # the reconciler's view: HAProxy is given servers (state file)
        self.set = ServiceWatchers(self._create, self._sink, patience,  # type: ignore[arg-type]
                                   lambda name: self.serving)  # fmt: skip

    def _create(self, name: str, config: ServiceConfig, sink: Sink) -> FakeWatcher:
        self.made.append(FakeWatcher(name, config, sink))
        return self.made[-1]

    def _sink(self, report: Report) -> None:
        self.got.append(tuple(f.registration.port for f in report.found))
        self.reports.append(report)

    async def reload(self, services: dict[str, ServiceConfig]) -> None:
        """What the daemon's apply_config does with them."""
        for watcher in self.set.drop(services):
            await watcher.stop()
        await self.set.follow(services)


async def started(patience: float = 60.0, serving: bool = False) -> tuple[Rig, FakeWatcher]:
    """A rig running service ``web`` at /web, and its watcher."""
    rig = Rig(patience, serving)
    await rig.set.start("web", service("/web"))
    [watcher] = rig.made
    return rig, watcher


async def swapping(patience: float = 60.0) -> tuple[Rig, FakeWatcher, FakeWatcher]:
    """A rig whose service ``web`` moved from path /a to /b: its old and new watcher."""
    rig = Rig(patience)
    await rig.set.start("web", service("/a"))
    await rig.reload({"web": service("/b")})
    [old, new] = rig.made
    return rig, old, new


async def folded() -> None:
    """A withdrawal while guarded is given SHRINK_FOLD_S later (synapse.outgoing_hold)."""
    await asyncio.sleep(SHRINK_FOLD_S + 0.02)


async def settle() -> None:
    for _ in range(5):  # (the replaced watcher's stop task)
        await asyncio.sleep(0)


async def test_the_old_watcher_reports_until_the_new_ones_first_complete_list() -> None:
    rig, old, new = await swapping()
    old.send(1, 2)  # (before: the reload does not replace what it reported)
    assert new.running and old.running and rig.set.active["web"] is old
    old.send(1)  # a withdrawal while the new watcher reads: applied
    await folded()
    new.send(3, partial=True)  # a union still waiting for a child: not a complete list
    assert rig.got == [(1, 2), (1,)] and rig.set.active["web"] is old
    new.send(3, 4)
    assert rig.got[-1] == (3, 4) and rig.set.active["web"] is new  # the whole list at once
    old.send(9)  # late, before its stop ended: nobody hears it
    await settle()
    assert old.stops == 1 and not old.running and new.stops == 0
    assert rig.got == [(1, 2), (1,), (3, 4)] and not rig.set.pending
    new.send(5)
    assert rig.got[-1] == (5,)


async def test_a_new_watcher_that_never_reports_is_said_and_the_old_one_follows_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    rig, old, new = await swapping(patience=0.05)
    new.last_error = "ZooKeeper refused the sasl credential (AUTH_FAILED)"
    await asyncio.sleep(0.1)
    [said] = [r for r in caplog.records if r.getMessage() == "watcher_swap_stalled"]
    assert said.levelno == logging.ERROR
    fields = said.smartstack_fields  # type: ignore[attr-defined]
    assert fields["service"] == "web" and "AUTH_FAILED" in fields["error"]
    replacing = rig.set.status()["web"]["replacing"]
    assert replacing["stalled"] and "AUTH_FAILED" in replacing["error"]
    old.send(1)
    assert rig.got == [(1,)] and rig.set.active["web"] is old
    # A config applied again without a SIGHUP (a docker_services change): it reads on.
    await rig.reload({"web": service("/b")})
    assert new.stops == 0 and rig.made[-1] is new
    # A SIGHUP with the same config: the stalled one is tried afresh (kazoo never retries it).
    rig.set.sighup()
    await rig.reload({"web": service("/b")})
    assert new.stops == 1 and rig.made[-1] is not new and rig.made[-1].running
    await asyncio.sleep(0.1)  # it stalls too; the SIGHUP's retry was used up by its apply
    await rig.reload({"web": service("/b")})
    assert len(rig.made) == 3 and rig.made[-1].stops == 0
    new.send(7)
    assert rig.got == [(1,)]


async def test_a_stalled_swap_completes_with_the_new_watchers_latest_partial_list(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A union with a child that never answers sends only partial lists: the old source
    # would be followed for ever. At the stall the latest one is applied (the reconciler
    # holds what no answered child lists), and so are later ones at once.
    caplog.set_level(logging.INFO)
    rig, old, new = await swapping(patience=0.05)
    new.send(3, partial=True)
    new.send(3, 4, partial=True)
    old.send(1)
    assert rig.got == [(1,)] and rig.set.active["web"] is old
    await asyncio.sleep(0.1)
    assert rig.got == [(1,), (3, 4)] and rig.set.active["web"] is new and not rig.set.pending
    [swapped] = [r for r in caplog.records if r.getMessage() == "watcher_swapped"]
    assert swapped.smartstack_fields["partial"] is True  # type: ignore[attr-defined]
    assert not [r for r in caplog.records if r.getMessage() == "watcher_swap_stalled"]
    await settle()
    assert old.stops == 1
    rig2, _, new2 = await swapping(patience=0.05)
    await asyncio.sleep(0.1)  # stalled with no list at all: the old one follows on
    new2.send(5, partial=True)  # the first partial list after the stall: applied at once
    assert rig2.got == [(5,)] and rig2.set.active["web"] is new2


def union(zk_path: str) -> ServiceConfig:
    zk = {"method": "zookeeper", "hosts": ["127.0.0.1:2181"], "path": zk_path}
    etcd = {"method": "etcd", "endpoints": ["127.0.0.1:1"], "path": "/svc/web"}
    multi = {
        "method": "multi",
        "resolver": {"method": "union"},
        "watchers": {"zk": zk, "etcd": etcd},
    }
    return ServiceConfig.model_validate({"discovery": multi})


async def test_a_partial_list_whose_answered_children_cover_the_change_swaps_at_once() -> None:
    # The union's ZooKeeper child moved; its etcd child (unchanged) is silent in both.
    rig = Rig()
    await rig.set.start("web", union("/old"))
    await rig.reload({"web": union("/new")})
    [old, new] = rig.made
    new.children = {"zk": SimpleNamespace(reports=0), "etcd": SimpleNamespace(reports=1)}
    new.send(7, partial=True)  # only the unchanged child answered: the move is not in it
    assert rig.got == [] and rig.set.active["web"] is old
    new.children["zk"].reports = 1
    new.send(3, partial=True)
    assert rig.got == [(3,)] and rig.set.active["web"] is new and not rig.set.pending


async def test_a_second_sighup_keeps_replaces_or_cancels_the_pending_watcher() -> None:
    rig, old, to_b = await swapping()
    await rig.reload({"web": service("/b")})  # the same again: it reads on
    assert len(rig.made) == 2 and to_b.stops == 0
    await rig.reload({"web": service("/c")})  # another one: replaces it, beside the old
    [_, _, to_c] = rig.made
    assert to_b.stops == 1 and rig.set.pending["web"].watcher is to_c
    to_b.send(2)
    assert rig.got == [] and rig.set.active["web"] is old
    await rig.reload({"web": service("/a")})  # back to the running one's: no swap
    assert to_c.stops == 1 and not rig.set.pending and old.stops == 0
    to_c.send(3)
    old.send(1)
    assert rig.got == [(1,)]


async def test_a_service_removed_while_its_swap_waits_stops_both() -> None:
    rig, old, new = await swapping()
    await rig.reload({})
    assert old.stops == new.stops == 1 and not rig.set.active and not rig.set.pending
    old.send(1)
    new.send(2)
    assert rig.got == []


async def test_the_daemons_stop_stops_both_and_the_replaced_one_still_stopping() -> None:
    rig = Rig()
    for name in ("web", "api"):
        await rig.set.start(name, service(f"/{name}"))
    await rig.reload({"web": service("/web2"), "api": service("/api2")})
    [web, api, web2, api2] = rig.made
    api2.send(1)  # api's swap is done: its old watcher is being stopped (a task)
    steps = rig.set.stop_steps()
    web2.send(2)  # (a report during the stop swaps nothing)
    for _, step in steps:
        await asyncio.wait_for(step(), 1)
    assert [w.stops for w in rig.made] == [1, 1, 1, 1]
    assert rig.set.active["web"] is web and not rig.set.pending
    loop_tasks = [t for t in asyncio.all_tasks() if t.get_name().startswith("unwatch-")]
    assert all(t.done() for t in loop_tasks) and api.stops == 1


# A SIGHUP's discovery that gives the service no server (a path typo, an empty prefix, a
# label_filters value typo) while the running one does: the old watcher is followed on
# (review s27: the swap emptied the backend, or froze it with use_previous_backends).


async def test_a_new_discovery_that_lists_no_server_waits_and_the_old_one_follows_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    rig, old = await started(patience=0.05)
    old.send(1, 2, 3)
    await rig.reload({"web": service("/wbe")})  # the typo
    new = rig.made[-1]
    new.send()  # a missing or empty path: a complete, empty list
    assert rig.set.active["web"] is old and rig.set.pending["web"].empty is not None
    assert rig.set.degraded() == [
        "web: the new discovery lists no servers; serving the previous discovery's "
        "servers since 0.0 s"
    ]
    old.send(1, 2)  # an instance withdrawn meanwhile: followed, not frozen
    await folded()
    assert rig.got == [(1, 2, 3), (1, 2)]
    await asyncio.sleep(0.1)
    [said] = [r for r in caplog.records if r.getMessage() == "watcher_swap_stalled"]
    fields = said.smartstack_fields  # type: ignore[attr-defined]
    assert said.levelno == logging.ERROR and fields["error"] == "the new discovery lists no servers"
    assert rig.set.status()["web"]["replacing"]["empty"] == "the new discovery lists no servers"
    new.send(7)  # the first record at the new path: the swap completes
    assert rig.got[-1] == (7,) and rig.set.active["web"] is new and not rig.set.degraded()
    await settle()
    assert old.stops == 1


async def test_new_label_filters_that_drop_every_record_wait_and_the_old_lists_keep_theirs() -> (
    None
):
    rig = Rig()
    await rig.set.start("web", service("/web", zone="az1"))
    [old] = rig.made
    old.send(1, 2)
    assert [f.value for f in rig.reports[-1].filters or ()] == ["az1"]
    await rig.reload({"web": service("/web", zone="az-1")})  # a value typo
    new = rig.made[-1]
    new.send(1, 2)
    assert rig.set.active["web"] is old
    assert rig.set.pending["web"].empty == "2 records, every one dropped by label_filters zone=az-1"
    old.send(1)  # selected with the old watcher's filters (the reconciler: Report.filters)
    await folded()
    assert rig.got[-1] == (1,) and [f.value for f in rig.reports[-1].filters or ()] == ["az1"]
    new.send(1, 3, zone="az-1")  # records that pass the new filters: it takes over
    assert rig.set.active["web"] is new and rig.got[-1] == (1, 3)


async def test_an_old_list_that_empties_while_held_is_followed_and_the_swap_waits_on() -> None:
    """Review s27 cr2: every old instance failing its check for a second completed the swap
    to the typo for good (their return unheard; 496/496 requests failed after it)."""
    rig, old = await started()
    old.send(1, 2, 3)
    await rig.reload({"web": service("/wbe")})  # the typo
    new = rig.made[-1]
    new.send()
    old.send()  # the old instances' blip: both lists empty, held (synapse.outgoing_hold)
    await settle()
    assert rig.got == [(1, 2, 3)] and rig.set.active["web"] is old and old.stops == 0
    assert rig.set.degraded() == [
        "web: the new discovery lists no servers; following the previous discovery, whose "
        "list gives no server either since 0.0 s"
    ]
    new.send()  # the typo's list again: still held
    old.send(1, 2, 3)  # the instances are back: served again
    assert rig.got == [(1, 2, 3), (1, 2, 3)] and rig.set.active["web"] is old
    old.send(1, 2)  # a withdrawal while held: followed live (review s22)
    await folded()
    assert rig.got[-1] == (1, 2)
    rig.set.hold.bound = 0.0  # (10 s after the swap's start)
    old.send()  # an empty list then goes to the reconciler (the config's rules apply)
    assert rig.got[-1] == ()
    old.send(1, 2, 3)
    assert "serving the previous discovery's servers since 0." in rig.set.degraded()[0]
    new.send(7)  # the first record at the new path: the swap completes
    assert rig.set.active["web"] is new and rig.got[-1] == (7,) and not rig.set.degraded()
    await settle()
    assert old.stops == 1


async def test_a_running_watcher_that_never_listed_holds_while_the_service_serves() -> None:
    """The old watcher never read (its registry down at the start): HAProxy serves the state
    file's list, which an empty new list must not replace (review s27 cr2)."""
    rig = Rig(serving=True)
    await rig.set.start("web", service("/web"))
    await rig.reload({"web": service("/wbe")})
    new = rig.made[-1]
    new.send()
    assert rig.set.active["web"] is rig.made[0] and rig.got == []
    assert rig.set.pending["web"].empty == "the new discovery lists no servers"
    new.send(4)
    assert rig.set.active["web"] is new and rig.got == [(4,)]
    # nothing served at the SIGHUP (no list, no state file): the new config's rules at once
    bare = Rig()
    await bare.set.start("web", service("/web"))
    await bare.reload({"web": service("/other")})
    bare.made[-1].send()
    assert bare.set.active["web"] is bare.made[-1] and bare.got == [()]


# A deliberate move to an empty path (review s27 cr4): once the old lists too give no server
# for HOLD_BOTH_EMPTY_S (its instances withdrawn), holding keeps nothing and the swap ends;
# their return at the old path must not be served while the config names the new one.


async def test_a_hold_ends_once_the_old_lists_give_no_server_for_hold_both_empty_s(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.INFO)
    # 0.6 s, looked at after 0.2 s: 0.4 s for a stall of this loaded process (0.2 s and 0.1 s
    # left 0.1 s: a 0.3 s stall failed it); the second look comes after it (a stall: later)
    monkeypatch.setattr(watcher_swap, "HOLD_BOTH_EMPTY_S", 0.6)
    rig, old = await started()
    old.send(1, 2)
    await rig.reload({"web": service("/web-v2")})  # on purpose: nothing registered there yet
    new = rig.made[-1]
    new.send()
    old.send()  # its instances withdrawn: both lists empty
    await asyncio.sleep(0.2)
    assert rig.set.active["web"] is old  # (not yet: a blip keeps the hold)
    await asyncio.sleep(0.6)  # (no report meanwhile: the timer ends it)
    # (the old empty list was held: both discoveries empty; the swap gives the new one)
    assert rig.set.active["web"] is new and not rig.set.pending and rig.got == [(1, 2), ()]
    [said] = [r for r in caplog.records if r.getMessage() == "watcher_swapped"]
    fields = said.smartstack_fields  # type: ignore[attr-defined]
    assert (
        fields["previous_empty_s"] >= 0.6 and fields["held"] == "the new discovery lists no servers"
    )
    old.send(1, 2)  # they register again at the old path: not served
    await settle()
    assert rig.got == [(1, 2), ()] and old.stops == 1


async def test_an_old_outage_shorter_than_hold_both_empty_s_keeps_the_hold(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The first empty spell's timer would end the hold at 1.0 s, before the check at 1.1 s;
    # the fresh count's, at 1.6 s, after it. 0.4-0.5 s either way for a stall of this loaded
    # process (with 0.2 s and sleeps of 0.1 and 0.15 s, 0.05 s: a 0.3 s stall failed it).
    monkeypatch.setattr(watcher_swap, "HOLD_BOTH_EMPTY_S", 1.0)
    rig, old = await started()
    old.send(1, 2)
    await rig.reload({"web": service("/wbe")})  # the typo
    new = rig.made[-1]
    new.send()
    old.send()  # a blip (a8e0100: every instance failing its check for a second)
    await asyncio.sleep(0.6)
    old.send(1, 2)  # back before HOLD_BOTH_EMPTY_S: the timer is cancelled
    old.send()  # empty again: counted afresh
    await asyncio.sleep(0.5)
    assert rig.set.active["web"] is old and rig.set.pending["web"].empty
    old.send(1)
    await asyncio.sleep(0.3)
    assert rig.set.active["web"] is old and rig.got[-1] == (1,) and old.stops == 0


async def test_an_old_list_empty_before_the_hold_counts_from_when_it_emptied(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Held because HAProxy still serves (use_previous_backends) while the old list was
    already empty: the hold ends HOLD_BOTH_EMPTY_S after that list, not after the SIGHUP."""
    monkeypatch.setattr(watcher_swap, "HOLD_BOTH_EMPTY_S", 0.2)
    rig, old = await started(serving=True)
    old.send()
    await asyncio.sleep(0.15)
    await rig.reload({"web": service("/web-v2")})
    new = rig.made[-1]
    new.send()
    assert rig.set.pending["web"].empty
    await asyncio.sleep(0.1)
    assert rig.set.active["web"] is new


async def test_an_old_partial_empty_list_does_not_count_towards_hold_both_empty_s(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A union's partial list before its children answer is not the old discovery gone."""
    monkeypatch.setattr(watcher_swap, "HOLD_BOTH_EMPTY_S", 0.1)
    rig, old = await started()
    old.send(1)
    await rig.reload({"web": service("/wbe")})
    rig.made[-1].send()
    old.send(partial=True)
    await asyncio.sleep(0.2)
    assert rig.set.active["web"] is old and rig.set.pending["web"].empty
