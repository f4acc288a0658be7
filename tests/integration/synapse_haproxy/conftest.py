"""Fixtures of the HAProxy controller tests: short socket dirs, controllers, HTTP traffic."""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from haproxy_helpers import managed_config
from prometheus_client import CollectorRegistry

from synapse.haproxy.controller import HAProxyController


@pytest.fixture
def sockdir() -> Iterator[Path]:
    """A short directory: unix socket paths must stay under 108 bytes. No HAProxy running a
    config file in it outlives the test: one a test killed is restarted by the controller's
    supervisor, then left running by a stop with ``stop_on_exit: false`` (67 masters had
    piled up on a 2-core host, loading every later test)."""
    path = Path(tempfile.mkdtemp(prefix="shx-"))
    yield path
    kill_haproxies_under(path)
    shutil.rmtree(path, ignore_errors=True)


def kill_haproxies_under(directory: Path) -> None:
    """SIGKILL every process started with ``-f <a file in directory>`` (masters and workers)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        configs = [Path(os.fsdecode(b)) for a, b in itertools.pairwise(args) if a == b"-f"]
        if any(config.parent == directory for config in configs):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry.name), signal.SIGKILL)


ControllerFactory = Callable[..., HAProxyController]


@pytest.fixture
async def managed_factory(sockdir: Path) -> AsyncIterator[ControllerFactory]:
    """Controllers in managed mode (synapse runs HAProxy); all stopped at teardown."""
    made: list[HAProxyController] = []

    def make(registry: CollectorRegistry | None = None, **overrides: Any) -> HAProxyController:
        config = managed_config(sockdir, **overrides)
        controller = HAProxyController(config, registry or CollectorRegistry())
        made.append(controller)
        return controller

    yield make
    failed = []
    for controller in made:  # every one, even when another fails: none may outlive the test
        try:
            await controller.stop()
        except Exception as exc:
            failed.append(exc)
    assert not failed, f"stopping controllers failed: {failed}"
