"""A synapse starting while its config directory is full and no HAProxy runs (both died: an
OOM of the unit, kill -9, a reboot), against a real HAProxy 2.6 (127.0.0.1 only): it serves
the config file on disk (the last one HAProxy ran) with today's servers at runtime, instead
of refusing every connection until space comes back. Never a file that is not there or that
HAProxy refuses."""

from __future__ import annotations

import errno
import logging
from pathlib import Path

import pytest
from haproxy_helpers import eventually, serves, web

from synapse.contract import ApplyOutcome
from synapse.haproxy import commands, configfile, installer, loadmark
from testbed.process import free_port

STARTED_NOT = "haproxy_start_failed"


def no_space(*args: object, **kwargs: object) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


def fill_disk(monkeypatch: pytest.MonkeyPatch, marker: bool = True) -> None:
    """Every file synapse writes beside the config fails as on a full disk (``marker``
    False: the small ``.loaded`` marker still fits, the config file does not)."""
    monkeypatch.setattr(configfile, "_write_parts", no_space)
    monkeypatch.setattr(loadmark, "stage", no_space)  # (the config file, beside its marker)
    monkeypatch.setattr(installer, "write_atomic", no_space)  # (the server-state file)
    monkeypatch.setattr(commands, "write_atomic", no_space)  # (a candidate to check)
    if marker:
        monkeypatch.setattr(loadmark, "write_atomic", no_space)


async def started_then_stopped(managed_factory, port: int, backends) -> Path:
    """A synapse served ``backends`` and stopped with its HAProxy: nothing serves; the
    config file it leaves (and its ``.loaded`` marker)."""
    first = managed_factory(restart_interval=0.1)
    assert (await first.apply([web(port, backends)], "t")).reload is ApplyOutcome.DONE
    await serves(port, {b.name for b in backends})
    await first.stop()  # (stop_on_exit: HAProxy stops too)
    assert first.status()["haproxy_pids"]["master"] is None
    return Path(first.settings.config_path)


async def test_a_start_on_a_full_disk_serves_the_file_and_todays_servers(
    managed_factory, http_backend_factory, monkeypatch
):
    b1, b2, b3 = (http_backend_factory(name) for name in ("b1", "b2", "b3"))
    port = free_port()
    config = await started_then_stopped(managed_factory, port, [b1, b2])
    on_disk = config.read_text()

    fill_disk(monkeypatch)
    controller = managed_factory(restart_interval=0.1)
    await controller.start()
    # the registry moved on while nothing ran: b2 left, b3 came
    result = await controller.apply([web(port, [b1, b3])], "startup")
    assert result.reload is ApplyOutcome.FAILED and "No space left" in (result.error or "")
    # before: nothing started, every connection refused until the disk had space again
    await serves(port, {"b1", "b3"})  # the file (b1, b2) and the registry's servers at runtime
    assert controller.info.starts == 1
    assert config.read_text() == on_disk  # the file HAProxy ran, as it was

    async def healthy() -> bool:  # HAProxy runs the desired state: no reload is owed
        return controller.health() == [] and controller.status()["pending_reload"] is None

    await eventually(healthy, "/health to report no problem")

    monkeypatch.undo()  # space again: the file follows what runs
    await controller.flush()
    assert f"127.0.0.1:{b3.port}" in config.read_text()
    assert controller.info.starts == 1 and controller.info.reloads == 0  # none was needed


async def test_a_first_start_on_a_full_disk_starts_nothing_until_there_is_space(
    managed_factory, http_backend_factory, monkeypatch, caplog
):
    """No config file on disk (the marker fits, the config does not): there is nothing to
    serve, so no start is tried from a file that is not there; the candidate once it fits."""
    caplog.set_level(logging.INFO, logger="synapse.haproxy")
    b1 = http_backend_factory("b1")
    port = free_port()
    fill_disk(monkeypatch, marker=False)
    controller = managed_factory(restart_interval=0.1)
    result = await controller.apply([web(port, [b1])], "startup")
    assert result.reload is ApplyOutcome.FAILED and "No space left" in (result.error or "")
    assert controller.info.starts == 0
    assert not [r for r in caplog.records if r.getMessage() == STARTED_NOT]
    assert not Path(controller.settings.config_path).exists()

    monkeypatch.undo()
    await controller.flush()  # the retry (every few seconds on a full disk)
    await serves(port, {"b1"})
    assert controller.info.starts == 1


async def test_a_file_haproxy_refuses_is_not_served(
    managed_factory, http_backend_factory, monkeypatch, caplog
):
    """The file on disk is broken (edited by hand): HAProxy's start refuses it and nothing
    runs (the candidate waits for space), rather than anything half-configured."""
    b1 = http_backend_factory("b1")
    port = free_port()
    config = await started_then_stopped(managed_factory, port, [b1])
    config.write_text(config.read_text() + "\nbackend broken\n    no-such-keyword 1\n")

    fill_disk(monkeypatch)
    controller = managed_factory(restart_interval=0.1)
    await controller.start()
    result = await controller.apply([web(port, [b1])], "startup")
    assert result.reload is ApplyOutcome.FAILED
    [refused] = [r.smartstack_fields for r in caplog.records if r.getMessage() == STARTED_NOT]
    assert "no-such-keyword" in refused["error"]
    assert controller.info.starts == 0
    assert controller.status()["haproxy_pids"]["master"] is None

    monkeypatch.undo()
    await controller.flush()
    await serves(port, {"b1"})
