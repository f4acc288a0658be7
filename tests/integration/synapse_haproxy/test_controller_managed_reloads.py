"""The controller in managed mode against a real HAProxy 2.6, with real HTTP traffic
through it: structural changes and reloads (rate limited, failed, invalid), crashes and a
restarted synapse adopting HAProxy; the runtime side is test_controller_managed.py."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

from haproxy_helpers import (
    eventually,
    managed_config,
    metric,
    server,
    serves,
    service,
    show_proc,
    web,
)
from prometheus_client import CollectorRegistry

from synapse.contract import ApplyOutcome
from synapse.haproxy.runtime import MasterClient
from testbed.process import free_port


async def test_structural_change_reloads_once_and_keeps_states(
    managed_factory, http_backend_factory
):
    b1, b2 = http_backend_factory("b1"), http_backend_factory("b2")
    port, api_port = free_port(), free_port()
    registry = CollectorRegistry()
    controller = managed_factory(registry, restart_interval=0.2)
    await controller.apply([web(port, [b1, b2])], "t")
    before = await show_proc(controller)

    api = service("api", [server("127.0.0.1", b2.port, "b2")], port=api_port)
    result = await controller.apply([web(port, [b1, b2]), api], "new service")
    # Right after the start the reload may wait for its restart_interval slot.
    assert result.reload in (ApplyOutcome.DONE, ApplyOutcome.PENDING), result
    assert any("backend api" in reason for reason in result.reasons)
    await controller.flush()
    assert controller.info.reloads == 1
    after = await show_proc(controller)
    assert after.reloads == before.reloads + 1 and after.workers != before.workers
    await serves(port, {"b1", "b2"})
    await serves(api_port, {"b2"})
    assert metric(registry, "synapse_haproxy_reloads_total", reason="config") == 1

    # Applying the same state again changes nothing.
    again = await controller.apply([web(port, [b1, b2]), api], "same")
    assert again.reload is ApplyOutcome.NONE and not again.ops and not again.config_written
    assert controller.status()["last_reload"]["reason"]


async def test_invalid_config_keeps_the_old_one_running(managed_factory, http_backend_factory):
    b1, b2 = http_backend_factory("b1"), http_backend_factory("b2")
    port = free_port()
    registry = CollectorRegistry()
    controller = managed_factory(registry, restart_interval=0)  # no wait: validation is inline
    await controller.apply([web(port, [b1, b2])], "t")
    good = Path(controller.settings.config_path).read_text()
    workers = (await show_proc(controller)).workers

    bad = await controller.apply([web(port, [b1, b2], backend=["no-such-keyword 1"])], "bad")
    assert bad.reload is ApplyOutcome.INVALID
    assert "no-such-keyword" in (bad.error or "")
    status = controller.status()
    assert "no-such-keyword" in status["validation_error"]["message"]
    assert metric(registry, "synapse_haproxy_validation_failures_total") == 1
    assert Path(controller.settings.config_path).read_text() == good
    await serves(port, {"b1", "b2"})

    # Membership still follows at runtime while the structural change is refused.
    meanwhile = await controller.apply([web(port, [b1], backend=["no-such-keyword 1"])], "t")
    assert meanwhile.reload is ApplyOutcome.INVALID and meanwhile.ops
    await serves(port, {"b1"})
    # The service is isolated on its last good block until the block changes: the known
    # refused block is not checked again.
    assert metric(registry, "synapse_haproxy_validation_failures_total") == 1
    assert metric(registry, "synapse_service_config_isolated", service="web") == 1
    assert "no-such-keyword" in controller.status()["validation_error"]["message"]
    assert (await show_proc(controller)).workers == workers and controller.info.reloads == 0

    fixed = await controller.apply([web(port, [b1, b2], backend=["retries 2"])], "fixed")
    assert fixed.reload is ApplyOutcome.DONE and controller.status()["validation_error"] is None
    assert metric(registry, "synapse_service_config_isolated", service="web") == 0
    await serves(port, {"b1", "b2"})


async def test_reloads_are_rate_limited_and_coalesced(managed_factory, http_backend_factory):
    b1 = http_backend_factory("b1")
    port = free_port()
    # The slot must outlast the start plus five applies even on a loaded machine.
    controller = managed_factory(restart_interval=2.0)
    await controller.apply([web(port, [b1])], "start")
    before = await show_proc(controller)
    results = []
    for seconds in range(11, 16):  # five structural changes in a burst
        desired = [web(port, [b1], frontend=[f"timeout client {seconds}s"])]
        results.append(await controller.apply(desired, "burst"))
    # The start took the first slot: the burst waits for the next one and shares it.
    assert {r.reload for r in results} == {ApplyOutcome.PENDING}
    assert controller.status()["pending_reload"] is not None
    await controller.flush()
    assert 1 <= controller.info.reloads <= 2
    assert (await show_proc(controller)).reloads - before.reloads == controller.info.reloads
    assert "timeout client 15s" in Path(controller.settings.config_path).read_text()
    await serves(port, {"b1"})


CRASHING_SYNAPSE = """
import asyncio, sys
sys.path.insert(0, {helpers!r})
from prometheus_client import CollectorRegistry
from pathlib import Path
from haproxy_helpers import managed_config, server, service
from synapse.haproxy.controller import HAProxyController

async def main():
    config = managed_config(Path({directory!r}))
    controller = HAProxyController(config, CollectorRegistry())
    await controller.start()
    desired = [service("web", [server("127.0.0.1", {b1}, "b1"), server("127.0.0.1", {b2}, "b2")],
                       port={port})]
    result = await controller.apply(desired, "first")
    print(result.reload, flush=True)
    await asyncio.sleep(60)  # killed with SIGKILL before this ends

asyncio.run(main())
"""


async def test_restarted_synapse_adopts_haproxy_without_reload(
    managed_factory, http_backend_factory, sockdir
):
    """synapse killed -9 leaves its HAProxy serving; the next synapse takes it over as is."""
    b1, b2 = http_backend_factory("b1"), http_backend_factory("b2")
    port = free_port()
    script = CRASHING_SYNAPSE.format(
        helpers=str(Path(__file__).parents[2] / "helpers"), directory=str(sockdir),
        b1=b1.port, b2=b2.port, port=port,
    )  # fmt: skip
    old = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)], stdout=subprocess.PIPE)
    master = MasterClient(str(sockdir / "haproxy-master.sock"))
    try:
        assert old.stdout is not None
        assert old.stdout.readline().strip() == b"done"
        old.send_signal(signal.SIGKILL)
        old.wait(10)
        await serves(port, {"b1", "b2"})
        before = await master.show_proc()

        controller = managed_factory(restart_interval=2.0)
        await controller.start()
        desired = [web(port, [b1, b2])]
        result = await controller.apply(desired, "restart")
        assert result.reload is ApplyOutcome.NONE and not result.ops and not result.config_written
        assert controller.info.reloads == 0 and controller.info.starts == 0
        after = await master.show_proc()
        assert (after.reloads, after.workers) == (before.reloads, before.workers)
        # ... and it is really in control: a change goes through the runtime API.
        assert (await controller.apply([web(port, [b2])], "t")).reload is ApplyOutcome.NONE
        await serves(port, {"b2"})
        await controller.stop()

        async def gone() -> bool:
            return not _alive(before.master_pid)

        await eventually(gone, "the adopted HAProxy to stop with synapse")
    finally:
        if old.poll() is None:
            old.kill()
        _kill_leftover(sockdir)


async def test_crashed_haproxy_is_restarted(managed_factory, http_backend_factory):
    b1 = http_backend_factory("b1")
    port = free_port()
    controller = managed_factory(restart_interval=0.1)
    await controller.apply([web(port, [b1])], "t")
    pid = controller.status()["haproxy_pids"]["master"]
    os.killpg(pid, signal.SIGKILL)

    async def restarted() -> bool:
        pids = controller.status()["haproxy_pids"]
        return pids["master"] not in (None, pid) and controller.info.starts == 2

    await eventually(restarted, "the managed HAProxy to be started again")
    await serves(port, {"b1"})


def _alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _kill_leftover(sockdir: Path) -> None:
    """If the test failed half-way, the orphaned HAProxy must not outlive it."""
    pid_text = subprocess.run(
        ["socat", "-t", "2", "stdio", f"unix-connect:{sockdir / 'haproxy-master.sock'}"],
        input=b"show proc\n", capture_output=True, check=False,
    ).stdout.decode()  # fmt: skip
    for line in pid_text.splitlines():
        fields = line.split()
        if len(fields) > 1 and fields[0].isdigit() and fields[1] == "master":
            os.killpg(int(fields[0]), signal.SIGKILL)


async def test_edge_shared_frontend_routes_by_host(managed_factory, http_backend_factory):
    shop1, shop2, blog = (http_backend_factory(n) for n in ("shop1", "shop2", "blog1"))
    port = free_port()
    controller = managed_factory(shared_frontend=[f"bind 127.0.0.1:{port}", "mode http"])

    def edge(name, backends):
        return service(
            name,
            [server("127.0.0.1", b.port, b.name) for b in backends],
            backend_only=True,
            backend=["mode http"],
            shared_frontend=[f"use_backend {name} if {{ hdr(host) -i {name}.example.com }}"],
        )

    assert (await controller.apply([edge("shop", [shop1]), edge("blog", [blog])], "t")).reloaded
    await serves(port, {"shop1"}, host="shop.example.com")
    await serves(port, {"blog1"}, host="blog.example.com")
    await serves(port, {"503"}, host="other.example.com")  # no default backend
    grown = await controller.apply([edge("shop", [shop1, shop2]), edge("blog", [blog])], "t")
    assert grown.reload is ApplyOutcome.NONE
    await serves(port, {"shop1", "shop2"}, host="shop.example.com")
    await serves(port, {"blog1"}, host="blog.example.com")


async def test_failed_reload_keeps_the_old_worker_and_retries(
    managed_factory, http_backend_factory, sockdir
):
    """`haproxy -c` passes, the new worker cannot bind: the old one serves, the file rolls back.
    (A bind of the operator's own section: a service's is left out instead, test_port_taken.)"""
    b1 = http_backend_factory("b1")
    port, taken = free_port(), free_port()
    registry = CollectorRegistry()
    controller = managed_factory(registry, restart_interval=0)
    await controller.apply([web(port, [b1])], "t")
    good = Path(controller.settings.config_path).read_text()
    workers = (await show_proc(controller)).workers
    extra = {"listen extra": [f"bind localhost:{taken}", f"server b1 127.0.0.1:{b1.port}"]}

    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", taken))
        blocker.listen()
        await controller.update_config(
            managed_config(sockdir, restart_interval=0, extra_sections=extra)
        )
        failed = await controller.apply([web(port, [b1])], "port in use")
        # Found before HAProxy tries (synapse.haproxy.ports): the port and its owner.
        assert failed.reload is ApplyOutcome.FAILED
        assert f"port {taken} (localhost:{taken}) is already bound by pid" in (failed.error or "")
        assert Path(controller.settings.config_path).read_text() == good
        assert (await show_proc(controller)).workers == workers
        assert controller.status()["last_reload_error"]["retry_in_s"] >= 1
        assert registry.get_sample_value("synapse_haproxy_reload_failures_total") == 1
        await serves(port, {"b1"})

    await controller.flush()  # the retry, once the port is free
    assert controller.info.reloads == 1 and controller.status()["last_reload_error"] is None
    await serves(taken, {"b1"})


async def test_crashed_haproxy_restarts_while_the_new_config_is_invalid(
    managed_factory, http_backend_factory
):
    """A refused candidate must not keep a dead HAProxy down: it restarts on the last good file."""
    b1, b2 = http_backend_factory("b1"), http_backend_factory("b2")
    port = free_port()
    controller = managed_factory(restart_interval=0)  # no wait: validation is inline
    await controller.apply([web(port, [b1])], "t")
    bad = await controller.apply([web(port, [b1, b2], backend=["no-such-keyword 1"])], "bad")
    assert bad.reload is ApplyOutcome.INVALID
    await serves(port, {"b1", "b2"})  # membership still follows at runtime
    # ... and the file says so: it is the old structure with the servers HAProxy runs now.
    await controller.flush()  # (written in the background)
    text = Path(controller.settings.config_path).read_text()
    assert f"127.0.0.1:{b2.port}" in text and "no-such-keyword" not in text
    pid = controller.status()["haproxy_pids"]["master"]
    os.killpg(pid, signal.SIGKILL)

    async def restarted() -> bool:
        return controller.status()["haproxy_pids"]["master"] not in (None, pid)

    await eventually(restarted, "the managed HAProxy to be started on the last good config")
    await serves(port, {"b1", "b2"})
