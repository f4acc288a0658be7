"""The outside-reload watch (``synapse.haproxy.outside``): another pid has the controller
read whole and apply; synapse's own reload meanwhile, or the same pid, does nothing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

from synapse.haproxy.outside import OutsideWatch, SweepHooks
from synapse.haproxy.runtime import RuntimeClient
from synapse.haproxy.view import RunningView


class FakeClient(RuntimeClient):
    """`show info` answers with ``pid``; ``during``: runs while the look waits for it."""

    def __init__(self, pid: str, during: Callable[[], None] = lambda: None) -> None:
        super().__init__("/nonexistent.sock")
        self.pid, self.during = pid, during

    async def ask_kept(self, commands: Sequence[str]) -> list[str]:
        self.during()
        return [f"Name: HAProxy\nPid: {self.pid}\nStopping: 0\n"]


def watched(client: FakeClient) -> tuple[OutsideWatch, RunningView, list[str]]:
    view = RunningView(client, 30.0, time.monotonic)
    view.valid, view.pid = True, "100"
    applied: list[str] = []

    async def apply() -> None:
        assert lock.locked() and not view.valid  # under the lock, the view to be read whole
        applied.append("apply")

    lock = asyncio.Lock()
    watch = OutsideWatch(client, view)
    watch.hooks = SweepHooks(lock, lambda: True, apply)
    return watch, view, applied


async def test_another_pid_is_applied_at_once() -> None:
    watch, view, applied = watched(FakeClient("200"))
    assert await watch.look()
    assert applied == ["apply"] and watch.noticed == 1 and not view.valid


async def test_the_same_pid_costs_nothing() -> None:
    watch, view, applied = watched(FakeClient("100"))
    assert not await watch.look()
    assert applied == [] and view.valid


async def test_synapse_own_reload_meanwhile_is_not_an_outside_one() -> None:
    client = FakeClient("200")
    watch, view, applied = watched(client)

    def own_reload() -> None:  # (what read_names does after synapse's reload)
        view.invalidate()
        view.valid, view.pid = True, "300"

    client.during = own_reload
    assert not await watch.look()
    assert applied == [] and watch.noticed == 0


async def test_a_new_master_after_ours_died_is_left_to_the_supervisor() -> None:
    """Managed mode: the master died and its container started another at once; that one
    answered the look before the supervisor adopted it (CI, round 32: logged as an outside
    reload instead of `haproxy_adopted`)."""
    alive = [True]
    client = FakeClient("200", during=lambda: alive.__setitem__(0, False))
    watch, view, applied = watched(client)
    watch.hooks.owner_alive = lambda: alive[0]
    assert not await watch.look()
    assert applied == [] and watch.noticed == 0 and view.valid
    alive[0] = True  # (adopted: the supervisor's start refreshed the view; a later pid is news)
    client.during = lambda: None
    assert await watch.look() and applied == ["apply"]
