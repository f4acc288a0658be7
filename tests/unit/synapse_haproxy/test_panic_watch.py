"""The panic's runner (synapse.haproxy.panic_watch) with a fake admin socket: a look that
fails (a reload, a slow socket) or finds the backend gone must not leave a hold without
its end (the checks disabled for good: the planner leaves held checks alone)."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry

from synapse.haproxy.metrics import HAProxyMetrics
from synapse.haproxy.panic_watch import PanicSettings, PanicWatch
from synapse.haproxy.sockets import HAProxySocketError

HEADER = (
    "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight "
    "srv_iweight srv_time_since_last_change srv_check_status srv_check_result "
    "srv_check_health srv_check_state srv_port\n"
)


def state(op: int, check_state: int) -> str:  # (status 12: L7TOUT)
    return HEADER + f"3 web 1 a 127.0.0.1 {op} 0 1 1 4 12 2 0 {check_state} 8080\n"


class FakeClient:
    """Answers `show servers state` with ``rows``; raises once ``fail`` is set (then clears)."""

    def __init__(self) -> None:
        self.rows = state(0, 6)  # DOWN, checked
        self.fail: Exception | None = None
        self.sent: list[str] = []
        self.held_while_sent: list[frozenset[str]] = []
        self.watch: PanicWatch | None = None

    async def ask(self, commands: list[str]) -> list[str]:
        if self.fail is not None:
            err, self.fail = self.fail, None
            raise err
        self.sent += commands
        if commands[0].startswith("show servers state"):
            return [self.rows]
        if commands[0].startswith("disable health"):
            assert self.watch is not None
            self.held_while_sent.append(self.watch.held_checks())
            self.rows = state(2, 2)  # UP, check disabled
        return [""] * len(commands)


async def _watch(hold_s: float = 0.3) -> tuple[PanicWatch, FakeClient]:
    watch = PanicWatch(
        None, lambda b: PanicSettings(True, hold_s), HAProxyMetrics(CollectorRegistry())
    )
    client = FakeClient()
    watch.client = client  # type: ignore[assignment]
    client.watch = watch
    watch.poke("web")
    for _ in range(50):
        await asyncio.sleep(0.01)
        if watch.held:
            break
    assert watch.held_checks() == {"web/a"}
    return watch, client


async def _until_ended(watch: PanicWatch) -> None:
    for _ in range(300):
        await asyncio.sleep(0.01)
        if not watch.held:
            return
    raise AssertionError(f"still held: {watch.status()}")


async def test_a_failed_look_at_the_hold_s_end_is_tried_again() -> None:
    watch, client = await _watch()
    client.fail = HAProxySocketError("connection refused (a reload)")
    await _until_ended(watch)  # (before: held for good, no alert comes: the checks are off)
    assert "enable health web/a" in client.sent
    await watch.stop()


async def test_a_hold_whose_backend_is_gone_ends() -> None:
    watch, client = await _watch()
    client.rows = "Can't find backend.\n"  # (the service was removed: a reload)
    await _until_ended(watch)
    assert watch.held_checks() == frozenset() and watch.status()["backends"] == {}
    await watch.stop()


async def test_the_servers_are_held_before_their_checks_are_disabled() -> None:
    """An apply that reads HAProxy while the panic's commands run must find the servers
    held (``Capabilities.held_checks``), else its planner enables the checks mid-panic."""
    watch, client = await _watch()
    assert client.held_while_sent == [frozenset({"web/a"})]
    await watch.stop()
