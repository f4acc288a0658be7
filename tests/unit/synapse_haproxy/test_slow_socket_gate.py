"""A slow admin socket (connected, no answer in time: a stalled worker) is not a lost one:
no reload for SLOW_LIMIT, /health says "slow"; a refused or missing socket is lost at once
(integration: tests/integration/synapse_haproxy/test_slow_socket.py)."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry

from synapse.haproxy import slow_socket as reader_module
from synapse.haproxy.executor import run_ops
from synapse.haproxy.health import problems
from synapse.haproxy.metrics import HAProxyMetrics
from synapse.haproxy.ops import Op, SetState
from synapse.haproxy.reader import RunningReader
from synapse.haproxy.slow_socket import is_slow
from synapse.haproxy.sockets import CommandFailed, SocketUnavailable
from synapse.haproxy.status import HAProxyStatus

TIMEOUT = 0.05


def unavailable(cause: BaseException | None = None) -> SocketUnavailable:
    error = SocketUnavailable("/s: no answer to 'show info'")
    error.__cause__ = cause
    return error


def test_a_socket_that_waited_the_whole_timeout_is_slow_one_refused_or_missing_is_gone():
    assert is_slow(unavailable(), 5.0, 5.0)  # (Session: the timer aborted, no answer)
    assert is_slow(unavailable(TimeoutError()), 5.01, 5.0)  # (unix_request's asyncio.timeout)
    assert not is_slow(unavailable(), 0.01, 5.0)  # closed at once: HAProxy went away
    assert not is_slow(unavailable(ConnectionRefusedError(111, "refused")), 5.0, 5.0)
    assert not is_slow(unavailable(FileNotFoundError(2, "no such file")), 5.0, 5.0)
    assert not is_slow(unavailable(ConnectionResetError(104, "reset")), 5.0, 5.0)
    assert not is_slow(CommandFailed("show info", "Unknown command"), 5.0, 5.0)


class StalledClient:
    """Answers, or waits the timeout and fails like a stalled worker, or refuses."""

    path, timeout = "/s", TIMEOUT

    def __init__(self) -> None:
        self.mode = "answer"

    async def version(self) -> tuple[int, int, int]:
        return (2, 6, 0)

    async def read_state(self, backends, with_pid=True, step=0, known=None, pause=None):
        if self.mode == "stalled":
            await asyncio.sleep(TIMEOUT)
            raise unavailable()
        if self.mode == "refused":
            raise unavailable(ConnectionRefusedError(111, "Connection refused"))
        return ("100" if with_pid else None), {"web": {}}


async def test_the_reader_says_slow_until_the_limit_then_lost_and_answered_resets():
    client, now = StalledClient(), [1000.0]
    reader = RunningReader([client], None, lambda: now[0])  # type: ignore[list-item]
    assert (await reader.read()).backends == {"web": {}}
    client.mode = "stalled"
    first = await reader.read()
    assert first.backends is None and first.runtime_slow and reader.slow_for() is not None
    now[0] += reader_module.SLOW_LIMIT - 1
    assert (await reader.read()).runtime_slow, "slow, not for long: no reload"
    now[0] += 2
    late = await reader.read()
    assert not late.runtime_slow and late.runtime_error, "slow for too long: hung, a reload"
    client.mode = "answer"
    assert (await reader.read()).backends is not None and reader.slow_for() is None
    assert reader.runtime_error is None
    assert reader.take_recovered() and not reader.take_recovered()  # (once: a re-plan)


async def test_a_refused_socket_is_lost_at_once():
    client = StalledClient()
    reader = RunningReader([client], None, lambda: 0.0)  # type: ignore[list-item]
    client.mode = "refused"
    running = await reader.read()
    assert not running.runtime_slow and running.runtime_error
    assert reader.slow_for() is None and not reader.take_recovered()


class CommandsClient:
    """``run_ops`` after the whole timeout: each op's result, or the batch's error."""

    path, timeout = "/s", TIMEOUT

    def __init__(self, outcome: str | Exception) -> None:
        self.outcome = outcome

    async def run_ops(self, ops: list[Op]) -> list[str | None]:
        await asyncio.sleep(TIMEOUT)
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return [self.outcome] * len(ops)


async def commands_slow(outcome: str | Exception, elapsed: float = 1.0) -> bool:
    """Whether the reader takes ``outcome`` of a command (``executor.run_ops``) for slow."""
    metrics = HAProxyMetrics(CollectorRegistry(), list, lambda: None)  # type: ignore[arg-type]
    op = SetState("web", "a", "ready")
    _, failures = await run_ops([CommandsClient(outcome)], [op], metrics)  # type: ignore[list-item]
    assert failures
    reader = RunningReader([StalledClient()], None, lambda: 0.0)  # type: ignore[list-item]
    return reader.commands_failed(failures, elapsed)


async def test_commands_without_an_answer_after_the_timeout_are_slow():
    from synapse.haproxy.sockets import NoAnswer, Unanswered

    lost = Unanswered("/s: no answer (connection lost or timed out)")  # (a batch cut short)
    assert await commands_slow(lost)
    assert not await commands_slow(lost, 0.001)  # at once: closed, not slow
    assert await commands_slow(NoAnswer("/s: the worker said nothing"))  # (any wording)
    refused = SocketUnavailable("/s: Connection refused")
    refused.__cause__ = ConnectionRefusedError(111, "Connection refused")
    assert not await commands_slow(refused)
    reader = RunningReader([StalledClient()], None, lambda: 0.0)  # type: ignore[list-item]
    assert reader.commands_failed([lost], 1.0)
    assert reader.slow_for() == 1.0 and reader.runtime_error


async def test_a_command_haproxy_answered_is_never_slow_whatever_its_words():
    """Told by type, not by the wording: an answer saying "no answer" is an answer."""
    answered = str(CommandFailed("set server web/a addr 10.0.0.1", "web/a: no answer"))
    assert not await commands_slow(answered)


def test_health_says_slow_rather_than_gone():
    info = HAProxyStatus()
    [slow] = problems(info, "/s: no answer to 'prompt'", True, False, True, slow_for=12.3)
    assert "slow" in slow and "12 s" in slow and "does not answer" not in slow
    [gone] = problems(info, "/s: Connection refused", True, False, True)
    assert "does not answer" in gone
