"""An engine that never answered is said: the watch's connection starts unknown, so its first
failed attempt logs ``docker_disconnected`` (before, ``connected`` started False and only a
change was logged: a missing socket at start was never said)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from smartstack.docker_events import ContainerWatch
from smartstack.logs import _FIELDS as FIELDS


def said(caplog: pytest.LogCaptureFixture) -> list[tuple[str, Any]]:
    return [(r.getMessage(), vars(r)[FIELDS].get("error")) for r in caplog.records
            if r.getMessage().startswith("docker_")]  # fmt: skip


async def test_the_first_failure_is_logged_once_then_the_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="smartstack.docker")
    watch = ContainerWatch("unix:///missing.sock", asyncio.get_running_loop(), lambda _c: None)
    assert watch.connected is None  # unknown until the first attempt
    watch._set_connected(False, "FileNotFoundError: no such file")
    watch._set_connected(False, "FileNotFoundError: no such file")  # a retry: not again
    watch._set_connected(True, None)
    assert said(caplog) == [("docker_disconnected", "FileNotFoundError: no such file"),
                            ("docker_connected", None)]  # fmt: skip
