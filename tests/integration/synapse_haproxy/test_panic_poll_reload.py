"""The panic's backstop (synapse.haproxy.panic_poll) across a reload of an adopted HAProxy
2.6: its reads key a backend on its ``chkdown`` count, and a reload's new worker counts
again from 1 (its state file's DOWN) or 0. A backend DOWN at a read, then UP, a reload and
DOWN again before the next read showed the count of before: never poked, no panic, every
request a 503 after its wait (1,000 backends read every 2 s: 24 of 24 in 6 s, review s44)."""

from __future__ import annotations

import asyncio
import logging

import pytest
from haproxy_helpers import eventually, server, service
from synapse_e2e import http_get
from test_panic_gap import started

from synapse.haproxy.answers import parse_show_info
from synapse.haproxy.panic_poll import ASK, backends_down
from synapse.haproxy.runtime import RuntimeClient
from testbed.process import free_port


class HeldReads:
    """The controller's backstop reads, held from the first that saw ``web`` DOWN until
    ``let_go`` (the pause of an HAProxy of 1,000 backends, 2 s, without 1,000 backends)."""

    def __init__(self, client: RuntimeClient) -> None:
        self._ask, self.open = client.ask, asyncio.Event()
        self.open.set()
        self.count: int | None = None  # web's chkdown at the read that saw it DOWN
        client.ask = self._held  # type: ignore[method-assign]

    async def _held(self, commands: list[str]) -> list[str]:
        if ASK not in commands:  # (the panic's looks)
            return await self._ask(commands)
        await self.open.wait()
        answers = await self._ask(commands)
        if len(answers) == len(commands) and self.count is None:
            self.count = backends_down(answers[commands.index(ASK)]).get("web")
            if self.count is not None:
                self.open.clear()
        return answers


async def _web(client: RuntimeClient) -> tuple[str, int | None]:
    """HAProxy's worker pid and web's chkdown when it is DOWN (else None)."""
    info, stat = await client.ask(["show info", ASK])
    return parse_show_info(info)["Pid"], backends_down(stat).get("web")


async def test_a_backend_down_again_after_a_reload_is_poked(
    managed_factory, http_backend_factory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "synapse.haproxy.panic")
    backends = [http_backend_factory(name) for name in "ab"]
    port = free_port()
    health = {"enabled": True, "path": "/health", "inter_ms": 200, "panic_hold_ms": 5000}
    servers = [server("127.0.0.1", b.port, name) for b, name in zip(backends, "ab", strict=True)]
    web = service("web", servers, port=port, health_check=health)
    controller = await started(managed_factory, [web], adopted=True)
    client = RuntimeClient(controller.settings.runtime_sockets[0])
    reads = HeldReads(controller._panic.client)
    for backend in backends:
        backend.stop()  # (refused: DOWN, and the panic leaves them, L4CON)
    await eventually(lambda: asyncio.sleep(0, reads.count), "a read that saw web DOWN")
    old, _ = await _web(client)
    for backend in backends:
        backend.start()
    await eventually(lambda: _up(client), "web UP again")
    other = service("other", [server("127.0.0.1", free_port(), "x")], backend_only=True)
    await controller.apply([web, other], "a new backend: a reload")
    for backend in backends:
        backend.health_delay = 1.0  # (slower than `timeout check`: L7TOUT, the panic's)
    new, count = await eventually(lambda: _down(client), "web DOWN after the reload")
    assert new != old and count == reads.count  # (the case: another worker, the same count)
    reads.open.set()

    def panics() -> int:
        return sum(r.getMessage() == "haproxy_panic_start" for r in caplog.records)

    await eventually(lambda: asyncio.sleep(0, panics()), "the panic of web")  # before: none
    statuses = [(await asyncio.to_thread(http_get, port, None, 5.0))[0] for _ in range(5)]
    assert statuses == [200] * 5


async def _up(client: RuntimeClient) -> bool:
    return (await _web(client))[1] is None


async def _down(client: RuntimeClient) -> tuple[str, int] | None:
    pid, count = await _web(client)
    return (pid, count) if count is not None else None
