"""synapse.desired_list: a round re-routes only what changed, and the list stays exact."""

from __future__ import annotations

import random
from typing import Any

import pytest

from synapse.config import ServiceConfig
from synapse.desired_list import DesiredList
from synapse.model import DesiredService, Server
from synapse.reload_diff import ServiceState
from synapse.selection import Selection


def service(**haproxy: Any) -> ServiceConfig:
    block: dict[str, Any] = {"discovery": {"method": "base"}, "haproxy": haproxy}
    return ServiceConfig.model_validate(block)


def state(config: ServiceConfig, *hosts: str) -> ServiceState:
    found = ServiceState(config, config)
    found.selection = Selection(tuple(Server(f"{h}:80", h, 80) for h in hosts))
    return found


def select(found: ServiceState, *hosts: str) -> None:
    """What the reconciler's ``_select_all`` does to a service whose selection changed."""
    found.selection = Selection(tuple(Server(f"{h}:80", h, 80) for h in hosts))
    found.desired = None


class Router:
    """The zone router's part: one entry per service, two for the names in ``split``."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.split: set[str] = set()

    def __call__(self, made: DesiredService) -> list[DesiredService]:
        self.asked.append(made.name)
        if made.name in self.split:
            return [made, DesiredService(made.name + "_zone", made.config, made.servers)]
        return [made]


def test_a_change_routes_only_its_service_and_keeps_the_others_objects() -> None:
    plain = service()
    services = {f"s{i}": state(plain, f"10.0.0.{i}") for i in range(50)}
    router = Router()
    kept = DesiredList(router)
    before = kept.build(services)
    assert len(before) == 50 and kept.rebuilt == 1 and len(router.asked) == 50
    router.asked.clear()
    select(services["s7"], "10.0.0.7", "10.0.1.7")
    after = kept.build(services)
    assert router.asked == ["s7"] and kept.rebuilt == 1, "one service looked at again"
    assert after is not before and after[7] is not before[7] and len(after[7].servers) == 2
    assert all(a is b for i, (a, b) in enumerate(zip(after, before, strict=True)) if i != 7)
    router.asked.clear()
    assert kept.build(services) == after and router.asked == [], "nothing changed: no routing"
    select(services["s9"], "10.0.0.9", "10.0.1.9")
    assert kept.build(services, {"s9", "gone"})[9].servers[1].host == "10.0.1.9"
    assert router.asked == ["s9"], "told what changed: only that one looked at"


def test_zone_routed_services_are_asked_every_round_and_a_new_slot_rebuilds() -> None:
    routed = service(balance="roundrobin")
    zoned = ServiceConfig.model_validate(
        {"discovery": {"method": "base"}, "zone_routing": {"zones": ["az1", "az2"]}}
    )
    services = {"a": state(routed, "10.0.0.1"), "z": state(zoned, "10.0.0.2")}
    services["off"] = ServiceState(routed, routed)  # no selection yet: no slot
    router = Router()
    kept = DesiredList(router)
    assert [d.name for d in kept.build(services)] == ["a", "z"]
    router.asked.clear()
    kept.build(services)
    assert router.asked == ["z"], "a zone decision may change by itself"
    select(services["off"], "10.0.0.3")  # its first servers: the list's shape changes
    assert [d.name for d in kept.build(services)] == ["a", "z", "off"] and kept.rebuilt == 2
    router.split.add("a")
    select(services["a"], "10.0.0.9")  # its routing now makes two entries
    assert [d.name for d in kept.build(services)] == ["a", "a_zone", "z", "off"]
    assert kept.rebuilt == 3


@pytest.mark.parametrize("hinted", [False, True], ids=["by identity", "told what changed"])
def test_the_kept_list_equals_a_fresh_build_after_random_changes(hinted: bool) -> None:
    # told: the reconciler names the services whose desired it reset (no scan of them all)
    rng = random.Random(15)
    plain, disabled = service(), service(disabled=True)
    services = {f"s{i}": state(plain if i % 9 else disabled, f"10.0.0.{i}") for i in range(40)}
    router = Router()
    kept = DesiredList(router)
    kept.build(services)
    for _ in range(200):
        name = f"s{rng.randrange(40)}"
        hosts = [f"10.1.{rng.randrange(3)}.{n}" for n in range(rng.randrange(3))]
        select(services[name], *hosts)
        if rng.random() < 0.1:
            router.split ^= {name}
            services[name].desired = None  # (as a changed config does)
        if rng.random() < 0.05:
            services = dict(services)  # a SIGHUP: a new mapping
        got = [(d.name, tuple(d.servers)) for d in kept.build(services, {name} if hinted else None)]
        want = DesiredList(Router())
        want_router = want._route
        assert isinstance(want_router, Router)
        want_router.split = set(router.split)
        assert got == [(d.name, tuple(d.servers)) for d in want.build(services)]
    assert kept.rebuilt < 100, "most rounds patch the kept list"


def test_a_router_that_raises_midway_leaves_no_truncated_list_behind() -> None:
    # (zone_apply's evacuation asks for the list and undoes on any error: synapse goes on)
    failing = {"on": False}

    def route(made: DesiredService) -> list[DesiredService]:
        if failing["on"] and made.name == "s5":
            raise RuntimeError("router bug")
        return [made]

    config = service()
    services = {f"s{i}": state(config, f"10.0.0.{i}") for i in range(10)}
    kept = DesiredList(route)
    kept.build(services)
    services = dict(services)  # (a SIGHUP: a new mapping, a whole build)
    failing["on"] = True
    with pytest.raises(RuntimeError, match="router bug"):
        kept.build(services)
    failing["on"] = False
    assert [d.name for d in kept.build(services)] == [f"s{i}" for i in range(10)]
