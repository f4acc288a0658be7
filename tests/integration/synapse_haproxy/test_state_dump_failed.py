"""A reload whose server-state dump cannot be written (the file's disk is full), against a
real HAProxy 2.6 (managed, 127.0.0.1 only): the new worker must not take the states of the
older file still there (servers back since then restored into MAINT: 503s)."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
from haproxy_helpers import read_back, server, serves, service, web

from synapse.contract import ApplyOutcome
from synapse.haproxy import installer
from synapse.model import DesiredService
from testbed.process import free_port


def others(count: int) -> list[DesiredService]:
    """More backends than a sweep's part: a reload reads and plans only the changed ones."""
    return [
        service(f"s{i}", [server("127.0.0.1", 9000, f"o{i}")], backend_only=True)
        for i in range(count)
    ]


def full(path: Path, data: str, mode: int = 0o644) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


def read_only(path: Path) -> None:
    raise OSError(errno.EROFS, "Read-only file system")


@pytest.mark.parametrize("removable", [True, False], ids=["file-removed", "file-stays"])
async def test_a_failed_state_dump_does_not_bring_back_old_states(
    managed_factory, http_backend_factory, monkeypatch, removable: bool
):
    b1, b2 = http_backend_factory("b1"), http_backend_factory("b2")
    p_web, p_new = free_port(), free_port()
    controller = managed_factory(restart_interval=0.0)  # (the reload: at once)
    await controller.start()
    rest = others(30)
    assert (await controller.apply([web(p_web, [b1, b2]), *rest], "t")).reload is ApplyOutcome.DONE
    await read_back(controller)
    assert controller._dumper is not None
    await controller._dumper.stop()  # (its rounds could not write either)
    await controller._reader.stop_sweeping()  # only what a reload plans at once is fixed

    # b1 leaves (a deploy): kept in MAINT, and the state file says so
    left = await controller.apply([web(p_web, [b2]), *rest], "b1 leaves")
    assert left.reload is ApplyOutcome.NONE
    await controller._installer.dump_server_state(True)
    assert " b1_" in controller.settings.state_file.read_text()

    # the state file's disk fills up; b1 comes back and b2 leaves (its process stops)
    monkeypatch.setattr(installer, "write_atomic", full)
    if not removable:
        monkeypatch.setattr(installer, "remove_state_file", read_only, raising=False)
    back = await controller.apply([web(p_web, [b1]), *rest], "b1 back, b2 leaves")
    assert back.reload is ApplyOutcome.NONE
    await serves(p_web, {"b1"})
    b2.stop()

    # a new service: a reload, whose dump fails; web itself did not change
    new = service("new", [server("127.0.0.1", b1.port, "n")], port=p_new)
    reloaded = await controller.apply([web(p_web, [b1]), new, *rest], "a new service")
    assert reloaded.reload is ApplyOutcome.DONE, reloaded
    # (before: b1 restored into MAINT from the older file, 503 until the sweep planned web)
    await serves(p_web, {"b1"})
    await serves(p_new, {"b1"})
    assert controller.settings.state_file.exists() is not removable
