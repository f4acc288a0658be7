"""The unit tier's guard: a unit test that opens a socket or starts a process fails.

Hooks around each phase (setup, call, teardown) rather than an autouse fixture: module- and
session-scoped fixtures are set up before any function fixture and would escape a fixture guard.
An attempt fails the test even when the code under test caught the refusal.
"""

from __future__ import annotations

import asyncio
from collections.abc import Generator, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from unit_guard import refuse_processes_and_sockets

# Property tests check what the code returns, not how fast: on a loaded 2-core CI runner one
# example can take longer than Hypothesis' 200 ms deadline (a test_record run failed so), and
# generating the data can trip its too_slow check. Speed is measured in bench/, not here.
settings.register_profile("smartstack", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("smartstack")


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


@pytest.fixture
def own_loop() -> Iterator[asyncio.AbstractEventLoop]:
    """A new event loop, not running: the test drives it (``run_until_complete``, callbacks
    from another thread's point of view); closed after."""
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()
