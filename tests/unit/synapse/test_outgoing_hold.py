"""synapse.outgoing_hold: while a service's discovery may be being replaced (a SIGHUP's
reload, then a pending swap), its running watcher's lists do not empty what HAProxy is
given (a shrinking list still applies: no withdrawal waits); steady discovery applies them
as they come (use_previous_backends keeps its meaning).

Review s36: a registry move of every nerve and synapse at once, use_previous_backends false:
the old watcher's emptied list was applied before the new watcher's first one (503s).
"""

from __future__ import annotations

import asyncio
import logging

import pytest
from test_watcher_swap import Rig, service


async def running() -> Rig:
    rig = Rig()
    await rig.set.start("web", service("/a"))
    rig.made[0].send(1, 2, 3)
    return rig


def events(caplog: pytest.LogCaptureFixture) -> list[tuple[str, dict]]:
    return [(r.getMessage(), r.smartstack_fields) for r in caplog.records  # type: ignore[attr-defined]
            if r.getMessage().startswith("outgoing_list_")]  # fmt: skip


async def test_a_registry_move_keeps_the_old_list_until_the_new_watchers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    rig = await running()
    old = rig.made[0]
    rig.set.hold.reload_begins()  # the SIGHUP: the file is being read
    old.send(1, 2)  # a nerve left the old cluster: applied (two servers take the load)
    old.send()  # every one did (use_previous_backends false: an empty backend)
    assert rig.got == [(1, 2, 3), (1, 2)]
    await rig.reload({"web": service("/b")})
    rig.set.hold.reload_ends()  # applied: the swap is pending, the hold goes on
    assert rig.got == [(1, 2, 3), (1, 2)]
    rig.made[1].send(1, 2, 3)  # the new cluster's list
    assert rig.got[-1] == (1, 2, 3) and rig.set.active["web"] is rig.made[1]
    [(held, h), (released, r)] = events(caplog)
    assert held == "outgoing_list_held" and h["servers"] == 2
    assert h["reason"] == "a SIGHUP's config is being read"
    assert released == "outgoing_list_released" and r["why"] == "swapped"


async def test_a_sighup_that_keeps_the_discovery_applies_the_held_list_at_once() -> None:
    rig = await running()
    rig.set.hold.reload_begins()
    rig.made[0].send()  # every instance withdrawn while the file is read
    assert rig.got == [(1, 2, 3)]
    await rig.reload({"web": service("/a")})  # the same discovery: no swap
    rig.set.hold.reload_ends()
    assert rig.got == [(1, 2, 3), ()]  # use_previous_backends decides, as always
    rig.made[0].send()  # steady: applied as it comes
    assert rig.got == [(1, 2, 3), (), ()]


async def test_steady_discovery_and_lists_that_still_give_a_server_pass() -> None:
    rig = await running()
    rig.made[0].send()  # steady: use_previous_backends decides, as always
    rig.made[0].send(1, 2)
    rig.set.hold.reload_begins()
    rig.made[0].send(1, 4)  # an addition and a withdrawal: applied at once
    rig.made[0].send(4)
    assert rig.got == [(1, 2, 3), (), (1, 2), (1, 4), (4,)]


async def test_a_new_watcher_that_never_lists_holds_the_old_list_for_the_bound_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    rig = await running()
    rig.set.hold.bound = 0.2
    await rig.reload({"web": service("/b")})  # (a docker_services apply: no SIGHUP)
    rig.made[0].send()
    assert rig.got == [(1, 2, 3)]
    await asyncio.sleep(0.4)
    assert rig.got == [(1, 2, 3), ()] and rig.set.active["web"] is rig.made[0]
    rig.made[0].send(1)
    rig.made[0].send()  # past the bound: applied as it comes
    assert rig.got[-1] == ()
    (_, held), (_, released) = events(caplog)
    assert held["reason"] == "its discovery is being replaced" and released["why"] == "bound"
    assert [r.levelno for r in caplog.records if r.getMessage() == "outgoing_list_released"] == [
        logging.WARNING
    ]


async def test_a_swap_dropped_by_a_sighup_back_applies_the_held_list() -> None:
    rig = await running()
    await rig.reload({"web": service("/b")})
    rig.made[0].send()
    assert rig.got == [(1, 2, 3)]
    await rig.reload({"web": service("/a")})  # back: the new watcher is dropped
    assert rig.got == [(1, 2, 3), ()]


async def test_a_partial_list_is_never_held_and_keeps_what_it_does_not_list() -> None:
    rig = await running()
    rig.set.hold.reload_begins()
    rig.made[0].send(partial=True)  # (the reconciler keeps 1, 2 and 3 meanwhile)
    rig.made[0].send()  # the union answered: every server gone, held
    assert rig.got == [(1, 2, 3), ()]


async def test_a_held_swap_follows_withdrawals_and_holds_only_an_empty_list() -> None:
    rig = await running()
    await rig.reload({"web": service("/b")})
    rig.made[1].send()  # the new discovery lists nothing (yet): the swap is held
    rig.made[0].send(1, 2)  # a withdrawal: followed live (review s22)
    rig.made[0].send()  # both empty: held (the instances between the two)
    assert rig.got == [(1, 2, 3), (1, 2)]
    rig.made[1].send(1, 2)  # they arrived: the swap
    assert rig.got[-1] == (1, 2) and rig.set.active["web"] is rig.made[1]
