"""Panic (synapse.haproxy.panic) against a real HAProxy 2.6 run by synapse (managed mode):
servers that answer ``/`` at once but their ``/health`` slower than ``timeout check`` are
all marked DOWN by HAProxy's checks (L7TOUT); before, every request was then a 503 although
every server would have answered it. Now synapse puts them back (checks disabled) for
``panic_hold_ms``, then enables the checks again. A refused (dead) server is not put back."""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

import pytest
from haproxy_helpers import DEFAULTS, eventually, server, service
from synapse_e2e import http_get

from synapse.haproxy.panic import L4CON, L7TOUT, servers_of
from synapse.haproxy.running import RunningServer
from synapse.haproxy.runtime import RuntimeClient
from testbed.process import free_port

HEALTH_S = 1.0  # /health answers after this: longer than `timeout check`
DEFAULTS_CHECKED = [*DEFAULTS, "timeout check 200ms"]


@pytest.fixture
def slow_health(http_backend_factory) -> list[int]:
    """Two servers whose /health answers after HEALTH_S, / at once."""
    ports = []
    for name in "ab":
        backend = http_backend_factory(name)
        backend.health_delay = HEALTH_S
        ports.append(backend.port)
    return ports


def _web(ports: list[int], hold_ms: int, **check: Any) -> tuple[Any, int]:
    port = free_port()
    servers = [server("127.0.0.1", p, name) for p, name in zip(ports, "abc", strict=False)]
    health = {"enabled": True, "path": "/health", "inter_ms": 300, "panic_hold_ms": hold_ms}
    return service("web", servers, port=port, health_check=health | check), port


def _short(servers: Any) -> dict[str, Any]:
    """Keyed by the names given ("a" of "a_127.0.0.1:port")."""
    return {name.partition("_")[0]: value for name, value in servers.items()}


async def _rows_full(controller) -> dict[str, RunningServer]:
    client = RuntimeClient(controller.settings.runtime_sockets[0])
    (answer,) = await client.ask(["show servers state web"])
    return servers_of(answer, "web")


async def _rows(controller) -> dict[str, RunningServer]:
    return _short(await _rows_full(controller))


async def _statuses(port: int, count: int) -> list[int]:
    got = []
    for _ in range(count):
        status, _ = await asyncio.to_thread(http_get, port, None, 5.0)
        got.append(status)
        await asyncio.sleep(0.05)
    return got


async def _started(managed_factory, ports: list[int], hold_ms: int, **config: Any):
    """A managed controller serving the ``web`` of ``ports`` (checked, panic after
    ``hold_ms``), and its frontend port."""
    controller = managed_factory(defaults=DEFAULTS_CHECKED, **config)
    web, port = _web(ports, hold_ms)
    await controller.start()
    await controller.apply([web], "t")
    return controller, web, port


async def _checks_failed(controller, wanted: dict[str, int]) -> None:
    """Until each server's last check said ``wanted`` (HAProxy marked them DOWN by then:
    fall 2 at inter 300 ms; a panic keeps the status it found)."""

    async def failed() -> bool:
        rows = await _rows(controller)
        return all(rows[name].check_status == status for name, status in wanted.items())

    await eventually(failed, f"checks failing {wanted}")
    await asyncio.sleep(0.3)  # (the panic's look, when there is one: ~ms after the alert)


async def test_servers_slow_to_their_check_keep_serving(
    managed_factory, slow_health: list[int], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "synapse.haproxy.panic")
    controller, _, port = await _started(managed_factory, slow_health, 8000)
    await _checks_failed(controller, {"a": L7TOUT, "b": L7TOUT})
    # before: [503] * 10 (HAProxy: "backend 'web' has no server available!")
    assert await _statuses(port, 10) == [200] * 10
    rows = await _rows(controller)
    assert {n: (r.op_state, r.checked) for n, r in rows.items()} == {
        "a": (2, False), "b": (2, False)
    }  # fmt: skip
    held = controller.status()["panic"]["backends"]["web"]["servers"]
    assert [name.partition("_")[0] for name in held] == ["a", "b"]
    started = [r.smartstack_fields for r in caplog.records  # type: ignore[attr-defined]
               if r.getMessage() == "haproxy_panic_start"]  # fmt: skip
    assert started and _short(started[0]["servers"]) == {"a": "L7TOUT", "b": "L7TOUT"}
    # an apply of that backend (a server added) leaves the held checks disabled
    dead = free_port()
    web2, _ = _web([*slow_health, dead], hold_ms=8000)
    web2.config.haproxy.port = port
    await controller.apply([web2], "t")
    rows = await _rows(controller)
    assert not rows["a"].checked and not rows["b"].checked and rows["c"].checked


async def test_the_checks_come_back_after_the_hold(
    managed_factory, slow_health: list[int], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "synapse.haproxy.panic")
    controller, _, _ = await _started(managed_factory, slow_health, 1000)

    async def ended() -> bool:
        return any(r.getMessage() == "haproxy_panic_end" for r in caplog.records)

    await eventually(ended, "the panic's end")
    rows = await _rows(controller)
    assert rows["a"].checked and rows["b"].checked  # (enabled again)

    # the overload lasting, the checks mark them DOWN again and the next panic starts
    async def again() -> bool:
        return sum(r.getMessage() == "haproxy_panic_start" for r in caplog.records) >= 2

    await eventually(again, "a second panic")


async def test_a_refused_server_is_not_put_back(
    managed_factory, slow_health: list[int], caplog: pytest.LogCaptureFixture
) -> None:
    """One server slow to its check, one dead (connection refused, L4CON): only the slow
    one is put back; a backend of dead servers alone stays without (503, no panic)."""
    caplog.set_level(logging.INFO, "synapse.haproxy.panic")
    controller, _, port = await _started(managed_factory, [slow_health[0], free_port()], 8000)
    await _checks_failed(controller, {"a": L7TOUT, "b": L4CON})
    rows = await _rows(controller)
    assert (rows["a"].op_state, rows["b"].op_state) == (2, 0)
    assert await _statuses(port, 5) == [200] * 5
    only_dead, port2 = _web([free_port()], hold_ms=8000)
    only_dead.config.haproxy.port = port2
    await controller.apply([only_dead], "t")
    await _checks_failed(controller, {"a": L4CON})
    assert await _statuses(port2, 3) == [503] * 3
    starts = [r for r in caplog.records if r.getMessage() == "haproxy_panic_start"]
    assert len(starts) == 1


async def test_a_next_synapse_enables_the_checks_a_panic_left_disabled(
    managed_factory, slow_health: list[int], caplog: pytest.LogCaptureFixture
) -> None:
    """Synapse stopped during a panic, HAProxy left serving: the next one adopts it and its
    first apply enables the held checks (its own panic holds none; ``held_checks``)."""
    caplog.set_level(logging.INFO, "synapse.haproxy.panic")
    kept = {"stats": {"enabled": False}, "stop_on_exit": False}
    first, web, _ = await _started(managed_factory, slow_health, 60000, managed=kept)
    await _checks_failed(first, {"a": L7TOUT, "b": L7TOUT})
    rows = await _rows(first)
    assert not rows["a"].checked and not rows["b"].checked  # (held)
    await first.stop()  # (HAProxy keeps serving, the checks still disabled)
    second = managed_factory(defaults=DEFAULTS_CHECKED)
    await second.start()
    result = await second.apply([web], "restart")
    full = await _rows_full(second)
    enabled = sorted(op for op in result.ops if op.startswith("enable health"))
    assert enabled == [f"enable health web/{name}" for name in sorted(full)], result.ops
    assert all(row.checked for row in full.values())


async def test_a_hung_held_server_leaves_once_another_answers(
    managed_factory, http_backend_factory, caplog: pytest.LogCaptureFixture
) -> None:
    """A held server that accepts and never answers (hung: L7TOUT too) fails its share
    (504 at `timeout server`); once a server answers its check (here one added) the hold
    ends and the held ones go back to their checks: no request fails (before: 4 of 12)."""
    caplog.set_level(logging.INFO, "synapse.haproxy.panic")
    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(64)  # (never accepted: the kernel completes the handshake, nothing answers)
    slow = http_backend_factory("b")
    slow.health_delay = HEALTH_S
    fresh = http_backend_factory("c").port
    defaults = [d for d in DEFAULTS_CHECKED if not d.startswith("timeout server")]
    defaults.append("timeout server 2s")  # (a hung server's request: a 504 after 2 s)
    controller = managed_factory(defaults=defaults)
    ports = [hung.getsockname()[1], slow.port]
    web, port = _web(ports, 15000)
    await controller.start()
    await controller.apply([web], "t")
    try:
        await _checks_failed(controller, {"a": L7TOUT, "b": L7TOUT})
        assert controller.status()["panic"]["backends"]
        web3, _ = _web([*ports, fresh], 15000)
        web3.config.haproxy.port = port
        await controller.apply([web3], "t")

        async def ended() -> bool:
            return any(r.getMessage() == "haproxy_panic_end" for r in caplog.records)

        await eventually(ended, "the hold's early end")
        assert await _statuses(port, 12) == [200] * 12
    finally:
        hung.close()


async def test_an_adopted_haproxy_panics_too(
    managed_factory, http_backend_factory, caplog: pytest.LogCaptureFixture
) -> None:
    """A synapse that adopted HAProxy (kept running across a synapse restart) does not read
    its output: HAProxy's alert never reached it, and its backends never panicked (before:
    every request 503). The backstop (synapse.haproxy.panic_poll) finds the backend DOWN."""
    caplog.set_level(logging.INFO, "synapse.haproxy.panic")
    backends = [http_backend_factory(name) for name in "ab"]
    ports = [backend.port for backend in backends]
    kept = {"stats": {"enabled": False}, "stop_on_exit": False}
    first, web, port = await _started(managed_factory, ports, 60000, managed=kept)
    await first.stop()  # (HAProxy keeps serving; its output now goes nowhere)
    second = managed_factory(defaults=DEFAULTS_CHECKED)
    await second.start()
    await second.apply([web], "restart")
    for backend in backends:
        backend.health_delay = HEALTH_S
    await _checks_failed(second, {"a": L7TOUT, "b": L7TOUT})

    async def held() -> bool:
        return "web" in second.status()["panic"]["backends"]

    await eventually(held, "the adopted HAProxy's backend in panic")
    assert await _statuses(port, 5) == [200] * 5
