"""The owed render (``synapse.haproxy.owed``) against a real HAProxy 2.6: an express
change's render and file write come once per window (QUIET after the last owed change,
WINDOW after the first at the latest), and everything that reads the file
(flush, stop, a crash and its revive, a reload) finds it saying what HAProxy runs."""

from __future__ import annotations

import dataclasses
import os
import signal
from pathlib import Path

from haproxy_helpers import eventually, read_back, server, serves, service, web
from prometheus_client import CollectorRegistry

from synapse.contract import ApplyOutcome
from synapse.haproxy import owed
from synapse.model import DesiredService
from testbed.process import free_port


def others(n: int) -> list[DesiredService]:
    return [
        service(f"s{i}", [server("127.0.0.1", 21000 + i, f"o{i}")], backend_only=True)
        for i in range(n)
    ]


def grown(services: list[DesiredService], i: int, port: int, name: str) -> list[DesiredService]:
    """``services`` with a server added to the i-th (the same config object: express)."""
    changed = list(services)
    old = changed[i]
    changed[i] = dataclasses.replace(old, servers=[*old.servers, server("127.0.0.1", port, name)])
    return changed


async def started(controller, services: list[DesiredService]) -> None:
    await controller.apply(services, "start")
    await read_back(controller)
    quiet = await controller.apply(services, "nothing new")  # ends clean: the next is express
    assert not quiet.ops


def file_text(controller) -> str:
    return controller._installer.file.text  # what the controller holds for the file


async def test_express_changes_leave_one_render_owed_and_the_window_pays_it(managed_factory):
    controller = managed_factory(CollectorRegistry())
    services = others(6)
    await started(controller, services)
    pieces, debt = controller._renderer.rendered_pieces, controller._owed
    for step in range(6):  # one change each to three services, twice over
        services = grown(services, step % 3, 22000 + step, f"n{step}")
        result = await controller.apply(services, f"step {step}")
        assert result.reload is ApplyOutcome.NONE and len(result.ops) == 2, result  # add, ready
        assert not result.config_written  # owed: no render, no file text yet
        assert controller.status()["render_owed"]
    assert debt.deferred == 6 and controller._renderer.rendered_pieces == pieces
    assert "127.0.0.1:22005" not in file_text(controller)  # the file lags (QUIET, WINDOW)

    async def paid() -> bool:
        return not debt.owed

    await eventually(paid, "the owed render")
    assert debt.paid_later == 1  # one render for the six changes ...
    assert controller._renderer.rendered_pieces == pieces + 3  # ... each service once
    text = file_text(controller)
    assert all(f"127.0.0.1:{22000 + step} " in text for step in range(6))
    assert not controller.status()["render_owed"]
    for step in range(6):  # HAProxy runs them all
        servers = await controller.backend_servers(f"s{step % 3}")
        assert f"n{step}_127.0.0.1:{22000 + step}" in servers


async def test_flush_and_stop_pay_the_owed_render_at_once(managed_factory, monkeypatch):
    monkeypatch.setattr(owed, "WINDOW", 60.0)  # (only flush or stop pays it here)
    monkeypatch.setattr(owed, "QUIET", 60.0)
    controller = managed_factory(CollectorRegistry())
    services = others(3)
    await started(controller, services)
    services = grown(services, 0, 22100, "f")
    await controller.apply(services, "change")
    assert controller._owed.owed
    await controller.flush()
    path = Path(controller.settings.config_path)
    assert not controller._owed.owed and "127.0.0.1:22100 " in path.read_text()
    services = grown(services, 1, 22101, "g")
    await controller.apply(services, "change")
    assert controller._owed.owed and "127.0.0.1:22101 " not in path.read_text()
    await controller.stop()  # the next synapse adopts HAProxy and trusts this file
    assert "127.0.0.1:22101 " in path.read_text()
    assert controller._owed.paid_later == 0


async def test_a_crash_while_the_render_is_owed_restarts_with_todays_servers(
    managed_factory, http_backend_factory, monkeypatch
):
    monkeypatch.setattr(owed, "WINDOW", 60.0)  # still owed when HAProxy dies
    monkeypatch.setattr(owed, "QUIET", 60.0)
    b1, b2 = http_backend_factory("b1"), http_backend_factory("b2")
    port = free_port()
    controller = managed_factory(CollectorRegistry(), restart_interval=0.1)
    first = web(port, [b1])
    await started(controller, [first])
    await controller.apply([dataclasses.replace(first, servers=web(port, [b1, b2]).servers)], "+")
    assert controller._owed.owed
    await serves(port, {"b1", "b2"})
    pid = controller.status()["haproxy_pids"]["master"]
    os.killpg(pid, signal.SIGKILL)

    async def restarted() -> bool:
        return controller.status()["haproxy_pids"]["master"] not in (None, pid)

    await eventually(restarted, "the managed HAProxy started again")
    await serves(port, {"b1", "b2"})  # the revive's bridge: today's servers at once
    assert not controller._owed.owed  # and its apply rendered and wrote the file
    await controller.flush()
    assert f"127.0.0.1:{b2.port} " in Path(controller.settings.config_path).read_text()


async def test_a_reload_after_owed_changes_runs_them(managed_factory, monkeypatch):
    monkeypatch.setattr(owed, "WINDOW", 60.0)
    monkeypatch.setattr(owed, "QUIET", 60.0)
    controller = managed_factory(CollectorRegistry(), restart_interval=0.1)
    services = others(3)
    await started(controller, services)
    services = grown(services, 2, 22200, "r")
    await controller.apply(services, "owed")
    assert controller._owed.owed
    added = [*services, *others(4)[3:]]  # a new service: a reload
    result = await controller.apply(added, "structural")
    assert result.reload in (ApplyOutcome.DONE, ApplyOutcome.PENDING), result
    await controller.flush()
    assert controller.info.reloads == 1 and not controller._owed.owed
    assert "127.0.0.1:22200 " in Path(controller.settings.config_path).read_text()
    assert "r_127.0.0.1:22200" in (await controller.backend_servers("s2") or {})


async def test_removed_servers_deleted_in_an_owed_apply(managed_factory):
    controller = managed_factory(CollectorRegistry(), remove_servers="delete")
    services = grown(others(2), 0, 22300, "d")
    await started(controller, services)
    gone = list(services)
    gone[0] = dataclasses.replace(services[0], servers=services[0].servers[:1])
    result = await controller.apply(gone, "removed")
    assert result.reload is ApplyOutcome.NONE and controller._owed.owed
    assert [op.split()[0] for op in result.ops] == ["set", "del"]
    await controller.flush()
    assert "d_127.0.0.1:22300" not in (await controller.backend_servers("s0") or {})
    assert "127.0.0.1:22300" not in file_text(controller)
