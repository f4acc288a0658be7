"""The Supervisor lets the held listening sockets go when HAProxy is not back at once."""

from __future__ import annotations

import asyncio

import pytest

from synapse.haproxy import supervisor
from synapse.haproxy.supervisor import Supervisor


class DyingHAProxy:
    """Dies as soon as it is watched; records when synapse's copies are dropped."""

    alive = True  # (each restart starts one)
    master_pid = 4321

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


async def _restart_recorded(haproxy: DyingHAProxy) -> None:
    async def restart() -> None:
        haproxy.events.append("restart")

    await _watched(haproxy, restart)


async def test_the_first_crash_and_a_short_back_off_keep_the_sockets() -> None:
    haproxy = DyingHAProxy(deaths=2)
    await _restart_recorded(haproxy)
    # 1st death: restarted at once; 2nd: back in 0.5 s, clients wait in the kept queue.
    assert haproxy.events == ["exit", "restart", "exit", "restart"]


async def test_a_longer_back_off_drops_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervisor, "HOLD_THROUGH", 0.2)
    haproxy = DyingHAProxy(deaths=2)
    await _restart_recorded(haproxy)
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


async def test_a_restart_that_started_nothing_is_not_watched_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Review s29 LOW-2: a restart held (socket directory read-only) starts nothing; the
    dead process's status is not said again and again (before: `haproxy_exited` logged at
    every loop, 11 times in 300 s). The reload gate retries the start, which watches."""
    haproxy = DyingHAProxy(deaths=5)
    haproxy.alive = False

    async def restart() -> None:
        haproxy.events.append("restart")

    caplog.set_level("INFO", "synapse.haproxy")
    supervisor = Supervisor(haproxy, restart, lambda: 0.0, clock=lambda: 0.0)  # type: ignore[arg-type]
    supervisor.watch()
    task = supervisor._task
    assert task is not None
    await asyncio.wait_for(task, 5)
    assert haproxy.events == ["exit", "restart", "drop"]  # (refused, not queued)
    assert [r.getMessage() for r in caplog.records].count("haproxy_exited") == 1
