"""A slow admin socket (slow_socket) around synapse's own reloads.

A reload on a view no answer came for in its apply (a trusted view, a structural change:
nothing read, nothing sent) asks HAProxy `show info` first: a stalled worker (slow) is not
reloaded into before SLOW_LIMIT; a gone socket (refused: HAProxy crashed) or an answer
reloads at once (integration: tests/integration/synapse_haproxy/test_slow_socket.py).
The read right after a reload, and a change's beside one, plan no further reload when
the socket is slow: the sweep reads again once it answers."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import pytest

from synapse.contract import ApplyOutcome, ApplyResult
from synapse.haproxy import slow_socket
from synapse.haproxy.configtext import parse_config
from synapse.haproxy.confirm import ReloadCheck
from synapse.haproxy.desired import DesiredConfig
from synapse.haproxy.ops import Plan, Reload
from synapse.haproxy.planner import plan
from synapse.haproxy.reader import RunningReader
from synapse.haproxy.reload_gate import ReloadGate
from synapse.haproxy.reload_window import UnderWay
from synapse.haproxy.reloading import Reloading
from synapse.haproxy.running import Capabilities, RunningState
from synapse.haproxy.sockets import SocketUnavailable

TIMEOUT = 0.05
CANDIDATE = SimpleNamespace(text="cfg", parts=("cfg",), parsed=parse_config(""))
STRUCTURAL = Reload((("service_added", "backend api is not running"),))


class InfoClient:
    """`show info` answered, refused, or waited for the whole timeout (a stalled worker)."""

    path, timeout = "/s", TIMEOUT

    def __init__(self, mode: str) -> None:
        self.mode, self.asked, self.answered_at = mode, 0, 0.0
        self.unanswered: str | None = None  # (RuntimeClient's last wait met the timeout)
        self.unanswered_at = 0.0

    async def info(self) -> dict[str, str]:
        self.asked += 1
        if self.mode == "stalled":
            await asyncio.sleep(TIMEOUT)
            raise SocketUnavailable("/s: no answer to 'show info' within 0.05s")
        if self.mode == "refused":
            error = SocketUnavailable("/s: Connection refused")
            raise error from ConnectionRefusedError(111, "Connection refused")
        self.answered_at = time.monotonic()
        return {"Pid": "100"}


class StalledNames(InfoClient):
    """A stalled worker's reads (the view's client) after a reload."""

    def __init__(self) -> None:
        super().__init__("stalled")

    async def backend_names(self) -> tuple[str, list[str]]:
        await self.info()
        raise AssertionError("stalled")

    async def read_state(self, backends, with_pid=True, step=0, known=None, pause=None):
        return await self.backend_names()

    async def release(self) -> None:
        pass


class Steps(Reloading):
    """The controller's reload decision (``Reloading._need_reload``), its reload counted."""

    def __init__(self, client: InfoClient, now: list[float]) -> None:
        self.config = SimpleNamespace(do_writes=True)  # type: ignore[assignment]
        self._managed = None
        self._clock = lambda: now[0]
        self._gate = ReloadGate(0.0, 0.0, self._clock, lambda: 0.0)
        self._reader = RunningReader([client], None, lambda: now[0])  # type: ignore[list-item]
        self._apply_began = time.monotonic()
        self._reader.version = (2, 6, 0)
        self._check = ReloadCheck(self._gate)
        self._installer = SimpleNamespace(read_all=False, serving_pid="200", write=lambda *_: False)  # type: ignore[assignment]
        self.reloads = 0
        self.further: list[str] = []  # reloads planned again (``Failures.reload_failed``)
        self._failures = SimpleNamespace(reload_failed=self._reload_failed)  # type: ignore[assignment]

    def _reload_failed(self, error: str, reload: Reload, *args: object) -> ApplyResult:
        self.further.append(reload.kind)
        return ApplyResult(reload=ApplyOutcome.FAILED, error=error)

    def _render(self, running: RunningState) -> DesiredConfig:
        return CANDIDATE  # type: ignore[return-value]

    def _plan(self, candidate: object, running: RunningState, reread: object = None) -> Plan:
        return plan(candidate, running, Capabilities((2, 6, 0), runtime_api=True))  # type: ignore[arg-type]

    async def _run_ops(self, ops: object) -> tuple[list[str], list[str]]:
        return [], []

    def _layout(self) -> None:  # type: ignore[override]
        return None

    async def _reload(self, reload: Reload, candidate: object) -> ApplyResult:
        self.reloads += 1
        return ApplyResult(reload=ApplyOutcome.DONE)

    def _slow(self) -> ApplyResult:
        return ApplyResult(reload=ApplyOutcome.FAILED, error="slow")


async def need_reload(steps: Steps) -> ApplyResult:
    return await steps._need_reload(STRUCTURAL, SimpleNamespace(text="cfg"))  # type: ignore[arg-type]


async def test_a_structural_reload_waits_while_an_unread_haproxy_is_slow():
    client, now = InfoClient("stalled"), [1000.0]
    steps = Steps(client, now)
    result = await need_reload(steps)
    assert steps.reloads == 0, "reloaded into a stalled worker"
    assert result.reload is ApplyOutcome.FAILED and client.asked == 1
    assert steps._reader.slow_for() is not None and steps._reader.runtime_error
    assert steps._reader._suspect, "the sweep tries again within a second"
    now[0] += slow_socket.SLOW_LIMIT + 1  # slow for too long: hung for good
    steps._apply_began = time.monotonic()
    assert (await need_reload(steps)).reload is ApplyOutcome.DONE and steps.reloads == 1


async def test_a_gone_socket_reloads_at_once():
    client = InfoClient("refused")
    steps = Steps(client, [0.0])
    assert (await need_reload(steps)).reload is ApplyOutcome.DONE and steps.reloads == 1
    assert client.asked == 1 and steps._reader.slow_for() is None


async def test_an_answer_reloads_and_one_in_this_apply_asks_nothing():
    client = InfoClient("answer")
    steps = Steps(client, [0.0])
    assert (await need_reload(steps)).reload is ApplyOutcome.DONE and client.asked == 1
    client.mode = "stalled"  # (HAProxy answered this apply already: no question)
    steps._apply_began = client.answered_at - 1.0
    assert (await need_reload(steps)).reload is ApplyOutcome.DONE and client.asked == 1
    assert steps.reloads == 2


async def test_a_wait_unanswered_after_this_applys_answer_is_that_slowness():
    """The worker stalled after the apply's read answered: a later wait of the same apply
    (the edge's `show map`) met the timeout. That is the stall: no reload into it, and no
    second wait for `show info` (the controller's lock held 5 s, not 10)."""
    client, now = InfoClient("stalled"), [1000.0]
    steps = Steps(client, now)
    client.answered_at = steps._apply_began + 0.01  # the apply's read
    client.unanswered = "/s: no answer to 'show map'"
    client.unanswered_at = client.answered_at + 0.01  # then the edge's `show map`
    result = await need_reload(steps)
    assert steps.reloads == 0, "reloaded into a worker that stalled after the apply's read"
    assert result.reload is ApplyOutcome.FAILED and client.asked == 0
    assert steps._reader.runtime_error == "/s: no answer to 'show map'"
    client.answered_at = client.unanswered_at + 0.01  # it answered since: old news
    steps._apply_began = client.answered_at - 1.0
    assert (await need_reload(steps)).reload is ApplyOutcome.DONE and client.asked == 0


async def test_the_runtime_client_remembers_a_wait_that_met_the_timeout(monkeypatch):
    from synapse.haproxy import runtime
    from synapse.haproxy.runtime import RuntimeClient
    from synapse.haproxy.sockets import NoAnswer

    async def request(path: str, command: str, timeout: float) -> str:
        if command == "show map /m":
            raise NoAnswer(f"{path}: no answer to {command!r} within {timeout}s")
        return ""

    monkeypatch.setattr(runtime, "unix_request", request)
    client = RuntimeClient("/s", TIMEOUT)
    await client.execute("show info")
    answered = client.answered_at
    assert answered > 0 and client.unanswered is None
    with pytest.raises(NoAnswer):
        await client.execute("show map /m")
    assert client.unanswered_at >= answered and "show map" in (client.unanswered or "")
    assert isinstance(client.unanswered, slow_socket.Unanswered)


async def test_a_slow_read_right_after_a_reload_plans_no_further_reload():
    client, now = StalledNames(), [1000.0]
    steps = Steps(client, now)
    result = await steps._after_reload(CANDIDATE, None, True)  # type: ignore[arg-type]
    assert steps.further == [], "a further reload (runtime_unavailable) into a slow worker"
    assert result.reload is ApplyOutcome.DONE and result.error == "slow", result
    assert steps._reader.slow_for() is not None and steps._reader._suspect  # (the sweep)


async def test_a_slow_read_beside_a_reload_plans_nothing():
    """(Held before too: beside a reload a slow read leaves the change to the reloading
    apply, whose own read then ends slow: ``_apply_held``.)"""
    steps = Steps(StalledNames(), [1000.0])
    result = await steps._beside(UnderWay(None, None, None))
    assert result.reload is ApplyOutcome.PENDING and not result.ops
    assert steps.further == [] and steps.reloads == 0 and steps._reader.slow_for() is not None
