"""The unit tier's guard: a unit test that opens a socket or starts a process fails.

Hooks around each phase (setup, call, teardown) rather than an autouse fixture: module- and
session-scoped fixtures are set up before any function fixture and would escape a fixture guard.
An attempt fails the test even when the code under test caught the refusal.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest
from unit_guard import refuse_processes_and_sockets


def _guarded(phase: str) -> Generator[None, Any, Any]:
    with refuse_processes_and_sockets() as attempts:
        result = yield
    if attempts:
        pytest.fail(
            f"unit test {phase} tried {sorted(set(attempts))}: move it to tests/integration"
        )
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, Any, Any]:
    return (yield from _guarded("setup"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, Any, Any]:
    return (yield from _guarded("call"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, Any, Any]:
    return (yield from _guarded("teardown"))
