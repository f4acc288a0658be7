"""A managed HAProxy that crashes while its config file cannot be written (a full disk),
against a real HAProxy 2.6 (127.0.0.1 only): it is started again at once from the file on
disk, not after the config writer's next retry (up to 5 s later)."""

from __future__ import annotations

import errno
import os
import signal
import time
from pathlib import Path

from haproxy_helpers import eventually, serves, web

from synapse.contract import ApplyOutcome
from synapse.haproxy import configfile, loadmark
from testbed.process import free_port


def full(path: Path, parts: tuple[str, ...]) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


async def test_a_crash_on_a_full_disk_restarts_without_waiting_for_the_writer(
    managed_factory, http_backend_factory, monkeypatch
):
    b1, b2 = http_backend_factory("b1"), http_backend_factory("b2")
    port = free_port()
    controller = managed_factory(restart_interval=0.1)
    assert (await controller.apply([web(port, [b1])], "t")).reload is ApplyOutcome.DONE
    file = controller._installer.file
    assert file is not None

    # the disk fills up; a change HAProxy takes at runtime cannot reach the file, and the
    # writer waits before its next attempt (30 s here: 5 s at most in production)
    monkeypatch.setattr(configfile, "RETRY_DELAYS", (30.0,))
    monkeypatch.setattr(configfile, "_write_parts", full)
    monkeypatch.setattr(loadmark, "stage", full)  # (the config file, beside its marker)
    assert (await controller.apply([web(port, [b1, b2])], "b2")).reload is ApplyOutcome.NONE

    async def failed() -> str | None:
        return file.error

    await eventually(failed, "the config writer's failed attempt")
    await serves(port, {"b1", "b2"})

    pid = controller.status()["haproxy_pids"]["master"]
    os.killpg(pid, signal.SIGKILL)
    killed = time.monotonic()

    async def restarted() -> bool:
        master = controller.status()["haproxy_pids"]["master"]
        return master not in (None, pid) and controller.info.starts == 2

    await eventually(restarted, "the managed HAProxy to be started again")
    assert time.monotonic() - killed < 5.0  # (before: the writer's 30 s retry wait)
    await serves(port, {"b1", "b2"})  # the file on disk (b1), and b2 at runtime
