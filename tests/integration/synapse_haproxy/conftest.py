"""Fixtures of the HAProxy controller tests: short socket dirs, controllers, HTTP traffic."""

from __future__ import annotations

import shutil
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
    """A short directory: unix socket paths must stay under 108 bytes."""
    path = Path(tempfile.mkdtemp(prefix="shx-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


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
