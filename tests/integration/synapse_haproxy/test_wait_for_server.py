"""A request to a backend with no usable server waits for one (``wait_for_server_ms``,
synapse.haproxy.server_wait) against a real HAProxy 2.6: its only server sits at weight 0
(a zone evacuated while its backups died) and gets a weight 0.3 s after the request came.
Before, HAProxy answered 503 at once."""

from __future__ import annotations

import asyncio
import socket
import time
import urllib.error
import urllib.request

import pytest
from haproxy_helpers import haproxy_check, managed_config, server, service, show_proc

from synapse.contract import ApplyOutcome
from synapse.haproxy.render import Renderer
from synapse.haproxy.runtime import RuntimeClient
from testbed.process import free_port

LATE_S = 0.3  # the server gets its weight this long after the request came
# The wait these tests give HAProxy: the weight must land within it (a runtime command from
# a loaded CI machine can take a while), and the answer come well before it ends.
WAIT_S = 3.0


def get(port: int) -> tuple[int, float]:
    """(HTTP status, seconds it took)."""
    start = time.monotonic()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as answer:
            status = answer.status
    except urllib.error.HTTPError as err:
        status = err.code
    return status, time.monotonic() - start


def tcp_echo_first_line(port: int) -> tuple[bytes, float]:
    """An HTTP request over plain TCP: the answer's first line, and the seconds it took."""
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(b"GET / HTTP/1.0\r\n\r\n")
        data = conn.recv(200)
    return data.split(b"\r\n")[0], time.monotonic() - start


async def weighted_later(controller, backend: str, name: str) -> None:
    await asyncio.sleep(LATE_S)
    runtime = RuntimeClient(controller.settings.runtime_sockets[0])
    await runtime.execute(f"set weight {backend}/{name} 10")


def zero_weight(port: int, backend, **haproxy):
    """The service "web" whose only server has weight 0 (nerve weights)."""
    member = server("127.0.0.1", backend.port, backend.name, weight=0)
    return service("web", [member], port=port, use_nerve_weights=True, **haproxy), member


@pytest.mark.parametrize("mode", ["http", "tcp"])
async def test_a_request_waits_for_a_server_given_weight(managed_factory, http_backend_factory,
                                                         mode: str) -> None:  # fmt: skip
    backend, port = http_backend_factory("b1"), free_port()
    lines = {"listen": ["mode tcp"]} if mode == "tcp" else {}
    web, member = zero_weight(port, backend, **lines)
    controller = managed_factory(wait_for_server_ms=int(WAIT_S * 1000))  # (off by default)
    await controller.start()
    await controller.apply([web], "t")

    later = asyncio.create_task(weighted_later(controller, "web", member.name))
    if mode == "http":
        status, took = await asyncio.to_thread(get, port)
        assert status == 200, f"HTTP {status} after {took:.2f} s"
    else:
        first, took = await asyncio.to_thread(tcp_echo_first_line, port)
        assert first.endswith(b"200 OK"), (first, took)
    await later
    assert LATE_S * 0.8 < took < WAIT_S - 0.5  # it waited for the weight, not the whole wait


async def test_the_wait_is_bounded_and_can_be_turned_off(managed_factory, http_backend_factory):
    backend, port = http_backend_factory("b1"), free_port()
    controller = managed_factory(wait_for_server_ms=400, restart_interval=0)
    await controller.start()
    web, _ = zero_weight(port, backend)
    await controller.apply([web], "t")
    status, took = await asyncio.to_thread(get, port)
    assert status == 503 and 0.35 < took < 1.0, (status, took)  # waited 400 ms, no more

    off, _ = zero_weight(port, backend, wait_for_server_ms=0)
    result = await controller.apply([off], "t")  # (a structural change: a reload)
    assert result.reload is ApplyOutcome.DONE, result
    status, took = await asyncio.to_thread(get, port)
    assert status == 503 and took < 0.2, (status, took)


async def test_a_server_added_at_runtime_is_waited_for(managed_factory, http_backend_factory):
    """The old server deleted (`del server`), the new one added at weight 0 (`add server`):
    runtime only. Review s40 cr-hold: the Lua walked 2.6's snapshot of the servers at start,
    which lacks the added one (a 503 at once) and keeps the deleted one, whose freed memory
    crashed the worker (SIGFPE/SIGSEGV: every service down until the restart)."""
    backend, port = http_backend_factory("b1"), free_port()
    controller = managed_factory(wait_for_server_ms=int(WAIT_S * 1000), remove_servers="delete")
    await controller.start()
    old = server("127.0.0.1", backend.port, "old", weight=5)
    await controller.apply([service("web", [old], port=port, use_nerve_weights=True)], "t")
    assert (await asyncio.to_thread(get, port))[0] == 200
    workers = (await show_proc(controller)).workers
    web, member = zero_weight(port, backend)
    result = await controller.apply([web], "t")
    assert result.reload is ApplyOutcome.NONE and any("del server" in op for op in result.ops)
    later = asyncio.create_task(weighted_later(controller, "web", member.name))
    status, took = await asyncio.to_thread(get, port)
    await later
    assert status == 200 and LATE_S * 0.8 < took < WAIT_S - 0.5, (status, took)
    assert (await show_proc(controller)).workers == workers  # the same worker: no crash


async def test_an_empty_backend_waits_too(managed_factory, http_backend_factory):
    """The registry lists no server (its server in maintenance, then deleted): the Lua
    cannot tell that from servers on their way, so the 503 comes after the wait."""
    backend, port = http_backend_factory("b1"), free_port()
    controller = managed_factory(wait_for_server_ms=300, remove_servers="delete")
    await controller.start()
    await controller.apply([service("web", [server("127.0.0.1", backend.port, "b1")],
                                    port=port)], "t")  # fmt: skip
    assert (await asyncio.to_thread(get, port))[0] == 200
    workers = (await show_proc(controller)).workers
    await controller.apply([service("web", [], port=port)], "t")
    for _ in range(5):
        status, took = await asyncio.to_thread(get, port)
        assert status == 503 and 0.25 < took < 1.0, (status, took)
    assert (await show_proc(controller)).workers == workers  # the same worker: no crash


def test_an_operators_own_lua_still_loads(tmp_path):
    """Their `lua-load` and their own action beside synapse's: `haproxy -c` accepts both."""
    own = tmp_path / "own.lua"
    own.write_text('core.register_action("mine", { "http-req" }, function(txn) end, 0)\n')
    config = managed_config(tmp_path, **{"global": ["maxconn 256", f"lua-load {own}"]})
    web = service("web", [server("127.0.0.1", 1, "a")], backend=["http-request lua.mine"])
    text = Renderer(config).render([web]).text
    assert f"lua-load {own}" in text and "lua-load-per-thread" in text
    haproxy_check(text, tmp_path)
