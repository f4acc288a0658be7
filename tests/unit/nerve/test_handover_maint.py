"""Maintenance entered during a SIGHUP hand-over (the new registry slow or down, the old
registration kept until the new one is written, up to HANDOVER_TIMEOUT): the old
registration is withdrawn at once, and the service says it is registered until then.
(Real nerve, two ZooKeepers and `nerve maint --drain`:
tests/integration/nerve/test_maint_operators.py.)"""

from __future__ import annotations

import asyncio

from nerve_fakes import Recorder

from nerve.handover import HANDOVER_TIMEOUT, hand_over
from nerve.reporters.base import Reporter
from nerve.service import Service


class Registry(Recorder):
    """A reporter whose registry answers at once, or (``hangs``) not until ``answers`` is
    set: a paused ensemble."""

    def __init__(self, hangs: bool = False) -> None:
        super().__init__()
        self.answers = asyncio.Event()
        if not hangs:
            self.answers.set()

    async def _register(self) -> bool:
        await self.answers.wait()
        self.registered = True
        return True

    async def _withdraw(self) -> bool:
        await self.answers.wait()
        self.registered = False
        return True


class Registries:
    async def release(self, reporter: Reporter) -> None:
        pass


async def until(predicate, timeout: float) -> float:  # type: ignore[no-untyped-def]
    """Seconds until ``predicate()`` held (polled); TimeoutError after ``timeout``."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)
    return loop.time() - started


async def test_maintenance_during_a_hand_over_withdraws_the_old_registration_at_once() -> None:
    old = Service("web", [], [], Registry(), check_interval=0.05, initially_up=True)
    old.start()
    await until(lambda: old.reporter.registered, 2)
    new = Service("web", [], [], Registry(hangs=True), check_interval=0.05, initially_up=True)
    handing = asyncio.create_task(hand_over(old, new, Registries()))  # type: ignore[arg-type]
    await until(lambda: new.reporter.desired, 2)  # its write hangs: the old one stays
    await asyncio.sleep(0.2)
    assert old.reporter.registered
    new.enter_maintenance("deploy")
    took = await until(lambda: not old.reporter.registered, HANDOVER_TIMEOUT + 1)
    assert took < 1.0  # at once, not after HANDOVER_TIMEOUT (5 s)
    await asyncio.wait_for(handing, 1.0)
    assert new.predecessor is None and not new.registered
    await new.halt()
    await new.reporter.cancel()


async def test_the_old_registration_counts_until_it_is_withdrawn() -> None:
    """The admin API answers once the hand-over's old registration is gone
    (``Service.wait_in_sync``), and says "registered" while it is not."""
    old = Service("web", [], [], Registry(), check_interval=0.05, initially_up=True)
    old.start()
    await until(lambda: old.reporter.registered, 2)
    slow_old: Registry = old.reporter  # type: ignore[assignment]
    slow_old.answers.clear()  # the old registry stalls too: the withdrawal cannot be written
    new = Service("web", [], [], Registry(), check_interval=0.05, initially_up=True)
    new.enter_maintenance("deploy")
    handing = asyncio.create_task(hand_over(old, new, Registries()))  # type: ignore[arg-type]
    retiring: Registry = old.reporter  # type: ignore[assignment]
    await until(lambda: retiring.decisions[-1] is False, 2)  # being withdrawn: it hangs
    await asyncio.sleep(0.3)
    assert old.reporter.registered and new.status()["registered"]  # consumers still send
    waiting = asyncio.create_task(new.wait_in_sync())
    await asyncio.sleep(0.3)
    assert not waiting.done() and new.registered
    slow_old.answers.set()
    await asyncio.wait_for(waiting, 2.0)
    assert not old.reporter.registered and not new.registered
    await asyncio.wait_for(handing, 2.0)
    await new.halt()
    await new.reporter.cancel()
