"""A reload on a view no answer came for in its apply (a trusted view, a structural change:
nothing read, nothing sent) asks HAProxy `show info` first: a stalled worker (slow) is not
reloaded into before SLOW_LIMIT; a gone socket (refused: HAProxy crashed) or an answer
reloads at once (integration: tests/integration/synapse_haproxy/test_slow_socket.py)."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

from synapse.contract import ApplyOutcome, ApplyResult
from synapse.haproxy import slow_socket
from synapse.haproxy.ops import Reload
from synapse.haproxy.reader import RunningReader
from synapse.haproxy.reload_gate import ReloadGate
from synapse.haproxy.reloading import Reloading
from synapse.haproxy.sockets import SocketUnavailable

TIMEOUT = 0.05
STRUCTURAL = Reload((("service_added", "backend api is not running"),))


class InfoClient:
    """`show info` answered, refused, or waited for the whole timeout (a stalled worker)."""

    path, timeout = "/s", TIMEOUT

    def __init__(self, mode: str) -> None:
        self.mode, self.asked, self.answered_at = mode, 0, 0.0

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


class Steps(Reloading):
    """The controller's reload decision (``Reloading._need_reload``), its reload counted."""

    def __init__(self, client: InfoClient, now: list[float]) -> None:
        self.config = SimpleNamespace(do_writes=True)  # type: ignore[assignment]
        self._managed = None
        self._gate = ReloadGate(0.0, 0.0, lambda: now[0], lambda: 0.0)
        self._reader = RunningReader([client], None, lambda: now[0])  # type: ignore[list-item]
        self._apply_began = time.monotonic()
        self.reloads = 0

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
