"""The Supervisor lets the held listening sockets go when HAProxy is not back at once."""

from __future__ import annotations

import asyncio

import pytest

from synapse.haproxy.supervisor import Supervisor


class DyingHAProxy:
    """Dies as soon as it is watched; records when synapse's copies are dropped."""

    def __init__(self, deaths: int) -> None:
        self.deaths = deaths
        self.events: list[str] = []

    async def wait_exit(self) -> int:
        if self.deaths == 0:
            await asyncio.Event().wait()  # (alive from now on)
        self.deaths -= 1
        self.events.append("exit")
        return -9

    def output_tail(self, lines: int = 10) -> str:
        return ""

    def drop_listeners(self) -> None:
        self.events.append("drop")


async def _watched(haproxy: DyingHAProxy, restart) -> None:
    supervisor = Supervisor(haproxy, restart, lambda: 0.0, clock=lambda: 0.0)
    supervisor.watch()
    for _ in range(200):
        await asyncio.sleep(0.01)
        if haproxy.events.count("restart") == 2:
            break
    await supervisor.stop()


async def test_the_first_crash_keeps_the_sockets_a_crash_loop_drops_them() -> None:
    haproxy = DyingHAProxy(deaths=2)
    restarts: list[str] = []

    async def restart() -> None:
        restarts.append("restart")
        haproxy.events.append("restart")

    await _watched(haproxy, restart)
    # 1st death: restarted at once, the copies kept for it; 2nd (backing off 0.5 s): dropped.
    assert haproxy.events == ["exit", "restart", "exit", "drop", "restart"]


async def test_a_restart_that_fails_drops_the_sockets() -> None:
    haproxy = DyingHAProxy(deaths=1)

    async def restart() -> None:
        raise RuntimeError("cannot start")

    supervisor = Supervisor(haproxy, restart, lambda: 0.0, clock=lambda: 0.0)
    supervisor.watch()
    task = supervisor._task
    assert task is not None
    with pytest.raises(RuntimeError):
        await asyncio.wait_for(task, 5)
    assert haproxy.events == ["exit", "drop"]
