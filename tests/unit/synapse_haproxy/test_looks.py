"""``synapse.haproxy.looks`` with a scripted socket and view (no HAProxy): reads shared and
kept FRESH_FOR, a socket error tried again, then the view's states marked stale, for at most
STALE_LIMIT; the reader told."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from synapse import zone_health
from synapse.haproxy import looks as looks_mod
from synapse.haproxy.looks import FRESH_FOR, STALE_LIMIT, Looks
from synapse.haproxy.sockets import SocketUnavailable

from test_view import srv  # isort: skip


class Socket:
    """read_state: ``fail`` errors first, then the servers of ``state``, counted."""

    def __init__(self) -> None:
        self.state = {"web": {"a": srv("web", "a", 1)}}
        self.fail = 0
        self.asked: list[list[str]] = []

    async def read_state(self, backends: list[str], with_pid: bool) -> tuple[None, Any]:
        await asyncio.sleep(0.01)
        self.asked.append(backends)
        if self.fail:
            self.fail -= 1
            raise SocketUnavailable("gone")
        return None, {b: self.state.get(b) for b in backends}

    async def read_labels(self, backends: list[str], whole: bool = False) -> dict[str, Any]:
        _, found = await self.read_state(backends, with_pid=False)  # (as tests replace it)
        return {
            b: None if s is None else {n: v.label for n, v in s.items()} for b, s in found.items()
        }


def _looks(now: list[float], socket: Socket | None = None) -> tuple[Looks, Any, Any, list[str]]:
    view = SimpleNamespace(counter=0, unread=set(), backends={"web": {"a": srv("web", "a", 1)}})
    failures: list[str] = []
    looks = Looks([], view, failures.append, lambda: now[0])  # type: ignore[arg-type]
    looks.client = socket = socket or Socket()  # type: ignore[assignment]
    return looks, socket, view, failures


async def test_looks_at_once_share_one_read_and_it_answers_for_fresh_for() -> None:
    now = [0.0]
    looks, socket, view, _ = _looks(now)
    found = await asyncio.gather(*[looks.servers_of(["web"], probe=True) for _ in range(50)],
                                 looks.servers_of(["api"]))  # fmt: skip
    assert socket.asked == [["api", "web"]]  # one read, both backends
    assert found[0] == {"web": {"a": "UP"}} and found[-1] == {"api": None}
    now[0] = FRESH_FOR / 2
    await looks.servers_of(["web"], probe=True)
    assert len(socket.asked) == 1
    view.counter += 1  # a runtime command since: ask again
    await looks.servers_of(["web"], probe=True)
    now[0] = FRESH_FOR * 2
    await looks.servers_of(["web"], probe=True)
    assert len(socket.asked) == 3


async def test_every_stranded_zone_look_reaches_haproxy() -> None:
    """zone_health looks every FAST_S while a service is stranded: each look must read
    HAProxy, not the probes' FRESH_FOR cache (it answered every other look: 15 reads in 3 s
    of looks every 0.1 s, review s38). Looks in one moment still share a read."""
    now = [0.0]
    looks, socket, _, _ = _looks(now)
    router = SimpleNamespace(watched=lambda local=True: {"web": "web"}, decisions={"web": 1},
                             down={})  # fmt: skip
    applier = SimpleNamespace(servers_of=looks.servers_of)
    for look in range(1, 6):
        await zone_health.look(router, applier)  # type: ignore[arg-type]
        assert len(socket.asked) == look, f"look {look} read HAProxy"
        now[0] += zone_health.FAST_S
    await asyncio.gather(zone_health.look(router, applier), looks.servers_of(["web"]))  # type: ignore[arg-type]
    assert len(socket.asked) == 6, "a look and a read at once: one read"


async def test_a_socket_error_is_tried_again_then_answered_stale_then_unknown(
    monkeypatch,
) -> None:
    monkeypatch.setattr(looks_mod, "RETRY_PAUSE", 0.0)
    now = [0.0]
    looks, socket, _, failures = _looks(now)
    socket.fail = 1
    answer = (await looks.servers_of(["web"]))["web"]
    assert answer == {"a": "UP"} and answer.stale is None and not failures  # the second try
    socket.fail, now[0] = 99, 1.0
    answer = (await looks.servers_of(["web", "api"]))["web"]
    assert answer == {"a": "UP"} and "does not answer (gone)" in (answer.stale or "")
    assert failures == ["gone"]  # the reader told
    now[0] = 1.0 + STALE_LIMIT + 1
    assert await looks.servers_of(["web"]) == {"web": None}  # too old to tell
    socket.fail, now[0] = 0, now[0] + 1
    answer = (await looks.servers_of(["web"]))["web"]
    assert answer == {"a": "UP"} and answer.stale is None


async def test_a_look_answers_what_its_read_found_when_the_view_changed_meanwhile() -> None:
    # A runtime command during each read (the view's counter moves) leaves no answer fresh:
    # past 64 backends cached, pruning dropped the answers just read and the look said None.
    now = [0.0]
    looks, socket, view, _ = _looks(now)
    read_state = socket.read_state

    async def read_during_a_command(backends: list[str], with_pid: bool) -> tuple[None, Any]:
        view.counter += 1
        return await read_state(backends, with_pid)

    socket.read_state = read_during_a_command  # type: ignore[method-assign]
    for i in range(80):
        now[0] += 1
        socket.state[f"svc{i}"] = {"a": srv(f"svc{i}", "a", 1)}
        assert await looks.servers_of([f"svc{i}"]) == {f"svc{i}": {"a": "UP"}}, i
    assert len(socket.asked) == 80


class Silent(Socket):
    """A socket that connects and never answers (a stopped worker) until ``wake`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.wake = asyncio.Event()

    async def read_state(self, backends: list[str], with_pid: bool) -> tuple[None, Any]:
        await self.wake.wait()
        return await super().read_state(backends, with_pid)


async def test_a_silent_socket_is_answered_stale_at_once_and_said_late_then_unknown(
    monkeypatch,
) -> None:
    # review s36: HAProxy SIGSTOPped 20 s: each look waited both 5 s tries (10 s; curl
    # --max-time 1 failed), answered 200 for all 20 s, and /health said 200 for 10 s.
    monkeypatch.setattr(looks_mod, "PROBE_WAIT", 0.05)
    clock = [0.0]
    looks, socket, view, failures = _looks(clock, Silent())
    answer = (await asyncio.wait_for(looks.servers_of(["web"], probe=True), 1))["web"]
    assert answer == {"a": "UP"} and "no answer in 0.05 s" in (answer.stale or "")
    assert looks.late() is None  # (not LATE_LIMIT yet)
    clock[0] = looks_mod.LATE_LIMIT
    assert "no answer to a look at its servers for 2.0 s" in (looks.late() or "")
    answer = (await asyncio.wait_for(looks.servers_of(["web"], probe=True), 1))["web"]
    assert answer is not None and answer.stale  # still the view's, within STALE_LIMIT
    clock[0] = STALE_LIMIT + 0.1  # since the first unanswered ask, not since a try's end
    assert await asyncio.wait_for(looks.servers_of(["web"], probe=True), 1) == {"web": None}
    socket.wake.set()  # HAProxy answers again
    for _ in range(100):
        await asyncio.sleep(0.01)
        if looks.late() is None:
            break
    view.counter += 1  # (the read in flight answered; ask again)
    answer = (await asyncio.wait_for(looks.servers_of(["web"], probe=True), 1))["web"]
    assert answer == {"a": "UP"} and answer.stale is None and looks.late() is None
    assert not failures  # no try failed: the reader keeps reading on its own


async def test_a_look_after_a_failed_one_waits_probe_wait_for_a_slow_answer(monkeypatch) -> None:
    # review s36 cr-looks: a look that failed (the socket missing at a reload) and no read
    # since: the next probe (10 s later, a checker's period) waited AWAKE_WAIT (0.05 s) for
    # a HAProxy answering in 0.08 s, then answered from past STALE_LIMIT: None (a 503).
    monkeypatch.setattr(looks_mod, "RETRY_PAUSE", 0.0)
    now = [0.0]
    looks, socket, _, failures = _looks(now)
    socket.fail = 2  # both tries
    answer = (await looks.servers_of(["web"], probe=True))["web"]
    assert answer is not None and answer.stale and failures == ["gone"]
    now[0] = STALE_LIMIT + 1
    read_state = socket.read_state

    async def slow(backends: list[str], with_pid: bool) -> tuple[None, Any]:
        await asyncio.sleep(0.08)
        return await read_state(backends, with_pid)

    socket.read_state = slow  # type: ignore[method-assign]
    answer = (await looks.servers_of(["web"], probe=True))["web"]
    assert answer == {"a": "UP"} and answer.stale is None  # before: None


async def test_a_slow_read_right_after_a_reload_answers_the_states_read_before_it(
    monkeypatch,
) -> None:
    # review s36 (left open): right after a reload every backend is unread, and a probe whose
    # read took over PROBE_WAIT answered unknown (a 503) for a backend with servers UP.
    monkeypatch.setattr(looks_mod, "PROBE_WAIT", 0.05)
    looks, socket, view, _ = _looks([0.0], Silent())
    view.unread = {"web", "api"}  # (the reload: api is new, never read)
    view.backends["api"] = {}
    found = await asyncio.wait_for(looks.servers_of(["web", "api"], probe=True), 1)
    web = found["web"]
    assert web == {"a": "UP"} and "from before HAProxy's reload" in (web.stale or "")
    assert found["api"] is None
    socket.wake.set()
