"""A ContainerWatch session against a scripted engine: what a reconnect's resync keeps.

`_session` runs inline here (no thread, no socket): the fake engine hands out the events of
one connection, then the stream ends as if the connection dropped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast

import pytest

import docker
from smartstack.docker_events import EVENTS, NETWORK_EVENTS, ContainerWatch
from smartstack.docker_signals import STOP_GRACE_MIN_S, STOP_MARGIN_S, STOP_TIMEOUT_S
from smartstack.docker_stream import started_ns

CID = "feed" * 16
STARTED = "2026-01-01T00:00:00.100000000Z"
RESTARTED = "2026-01-01T00:05:00.100000000Z"


class InlineLoop:
    def call_soon_threadsafe(self, fn: Callable[..., None], *args: Any) -> None:
        fn(*args)


class FakeApi:
    def __init__(self) -> None:
        self.started_at = STARTED
        self.events_of_next_connection: list[dict[str, Any]] = []
        self.since: list[str | None] = []
        self.filters: list[dict[str, Any]] = []
        self.labels: dict[str, str] = {}
        self.networks = {"a": {"IPAddress": "10.0.1.2"}}
        self.config: dict[str, Any] = {}  # more of its Config (StopTimeout)

    def events(self, decode: bool, filters: dict[str, Any], since: str | None = None) -> Any:
        self.since.append(since)
        self.filters.append(filters)
        events, self.events_of_next_connection = self.events_of_next_connection, []
        # (read after the listing; a callable in it is a change on the engine at that point)
        return (item for item in events if not (callable(item) and [item()]))

    def containers(self, filters: Any = None) -> list[dict[str, Any]]:
        return [{"Id": CID}]

    def inspect_container(self, container_id: str) -> dict[str, Any]:
        if container_id != CID:
            return {"Id": container_id, "Name": "/other", "State": {"Running": True},
                    "Config": {"Labels": {}}}  # fmt: skip
        state = {"Running": True, "StartedAt": self.started_at}
        config = {"Labels": self.labels, **self.config}
        return {"Id": CID, "Name": "/web1", "State": state, "Config": config,
                "NetworkSettings": {"Networks": self.networks}}  # fmt: skip


class FakeEngine:
    def __init__(self) -> None:
        self.api = FakeApi()

    def close(self) -> None:
        pass


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch) -> FakeEngine:
    fake = FakeEngine()
    monkeypatch.setattr(docker, "DockerClient", lambda **_: fake)
    return fake


def at(seconds: float, after: str = STARTED) -> float:
    """Epoch seconds, ``seconds`` after ``after`` (dockerd's clock = ours here)."""
    return (started_ns(after) or 0) / 1e9 + seconds


def set_time(w: ContainerWatch, seconds: float, after: str = STARTED, step: float = 0.0) -> None:
    """The watch's clocks at ``at(seconds, after)``; ``step``: the wall clock stepped (NTP)
    by that much, the monotonic clock not."""
    w.clock = lambda: at(seconds, after) + step
    w.monotonic = lambda: at(seconds, after) - 1e9  # (any origin: only its differences count)


def watch(labels: tuple[str, ...] = ()) -> ContainerWatch:
    w = ContainerWatch("tcp://127.0.0.1:1", cast(asyncio.AbstractEventLoop, InlineLoop()),
                       lambda _: None, labels=labels)  # fmt: skip
    set_time(w, 12)  # (the kills below are sent at +10 s)
    return w


def network_event(action: str, container_id: str) -> dict[str, Any]:
    attributes = {"container": container_id, "name": "b", "type": "bridge"}
    return {"Type": "network", "Action": action, "Actor": {"ID": "net-b", "Attributes": attributes}}


def kill(signal: str, after: str = STARTED, seconds: int = 10) -> dict[str, Any]:
    at = (started_ns(after) or 0) + seconds * 1_000_000_000
    attributes = {"name": "web1", "signal": signal}
    return {"Type": "container", "Action": "kill", "id": CID, "timeNano": at,
            "Actor": {"ID": CID, "Attributes": attributes}}  # fmt: skip


@pytest.mark.parametrize("signal", ["15", "19"])  # docker stop (draining), docker kill -s STOP
def test_a_container_being_stopped_stays_withdrawn_after_a_reconnect(engine, signal) -> None:
    w = watch()
    engine.api.events_of_next_connection = [kill(signal)]
    w._session()
    assert w.containers[CID].stopping
    w._session()  # the stream dropped: reconnect, full resync (the container still runs)
    assert w.containers[CID].stopping and not w.containers[CID].serving
    # resubscribed from the last event seen: dockerd replays what it buffered meanwhile
    assert engine.api.since == [None, f"{started_ns(STARTED) // 10**9 + 10}.100000000"]


def test_the_flag_ends_when_the_container_ran_again_meanwhile(engine) -> None:
    w = watch()
    engine.api.events_of_next_connection = [kill("15")]
    w._session()
    engine.api.started_at = RESTARTED  # stopped and started again while disconnected
    w._session()
    assert w.containers[CID].serving


def test_a_replayed_kill_older_than_the_current_start_does_not_withdraw(engine) -> None:
    w = watch()
    engine.api.started_at = RESTARTED
    engine.api.events_of_next_connection = [kill("15", after=STARTED)]  # sent to the old run
    w._session()
    assert w.containers[CID].serving
    engine.api.events_of_next_connection = [kill("15", after=RESTARTED)]
    w._session()
    assert not w.containers[CID].serving


def test_started_ns() -> None:
    assert started_ns("1970-01-01T00:00:01.5Z") == 1_500_000_000
    assert started_ns("1970-01-01T00:00:01.000000007Z") == 1_000_000_007
    assert [started_ns(s) for s in ("", "0001-01-01T00:00:00Z", "2026-01-01T00:00:00+01:00",
                                    "yesterday Z")] == [None] * 4  # fmt: skip


def test_a_periodic_resync_that_finds_a_difference_says_so(engine, caplog) -> None:
    """The stream should have told us: a difference means it missed events (a dead stream)."""
    w = watch()
    w._session()
    w._session(periodic=True)  # nothing changed
    assert "docker_resync_corrected" not in caplog.messages
    engine.api.started_at = RESTARTED  # restarted, and the stream said nothing
    w._session(periodic=True)
    assert caplog.messages.count("docker_resync_corrected") == 1
    engine.api.started_at = STARTED
    w._session()  # after a disconnection a difference is expected: not logged
    assert caplog.messages.count("docker_resync_corrected") == 1


def test_a_network_connect_or_disconnect_re_inspects_the_container(engine) -> None:
    w = watch(("app=web",))
    engine.api.labels = {"app": "web"}
    w._session()
    assert w.containers[CID].networks == {"a": "10.0.1.2"}
    engine.api.events_of_next_connection = [
        lambda: engine.api.networks.update({"b": {"IPAddress": "10.0.2.2"}}),  # after the list
        network_event("connect", CID),
        lambda: engine.api.networks.pop("a"),
        network_event("disconnect", CID),
        network_event("connect", CID),
        network_event("connect", "other" * 8),  # not ours (its labels do not match)
    ]
    w._session()
    assert w.containers[CID].networks == {"b": "10.0.2.2"}
    assert list(w.containers) == [CID]
    # dockerd would match a label filter against the network's labels: none asked for
    assert engine.api.filters[-1] == {"type": ["container", "network"],
                                      "event": [*EVENTS, *NETWORK_EVENTS]}  # fmt: skip


def test_container_events_are_matched_on_their_labels_client_side(engine) -> None:
    w = watch(("app=web",))
    engine.api.labels = {"app": "web"}
    actor = {"ID": "other" * 8, "Attributes": {"name": "other", "app": "db"}}
    other = {"Type": "container", "Action": "start", "id": "other" * 8, "Actor": actor}
    engine.api.events_of_next_connection = [other]
    w._session()
    assert list(w.containers) == [CID]
    engine.api.labels = {"app": "db"}  # (inspected labels decide too)
    w._session()
    assert w.containers == {}


@pytest.mark.parametrize("stop_timeout", [None, 30, 600])
def test_a_container_outliving_its_stop_deadline_serves_again(engine, caplog, stop_timeout):
    """`docker kill -s TERM` to a PID 1 without a handler, or an app that traps it and runs
    on: past its StopTimeout (default 10 s) plus a margin a real stop would have killed it,
    so the next resync (or event) serves it again. A frozen one stays out until CONT."""
    if stop_timeout is not None:
        engine.api.config = {"StopTimeout": stop_timeout}
    # (the kill: at +10 s; a stop's own -t is not in the events: at least STOP_GRACE_MIN_S)
    deadline = 10 + max((stop_timeout or STOP_TIMEOUT_S) + STOP_MARGIN_S, STOP_GRACE_MIN_S)
    w = watch()
    engine.api.events_of_next_connection = [kill("15")]
    w._session()
    set_time(w, deadline - 1)
    w._session(periodic=True)
    assert w.containers[CID].stopping
    set_time(w, deadline + 1)
    w._session(periodic=True)
    assert w.containers[CID].serving
    assert caplog.messages.count("docker_stop_outlived") == 1
    w._session()  # the flag is gone, not hidden: a reconnect's replay does not bring it back
    assert w.containers[CID].serving
    engine.api.events_of_next_connection = [kill("15")]  # replayed, long outlived
    w._session()
    assert w.containers[CID].serving


@pytest.mark.parametrize("step", [3600.0, -3600.0])
def test_a_wall_clock_step_during_the_stop_grace_moves_no_deadline(engine, caplog, step):
    """NTP stepping the clock an hour forward while a container drains must not put it back
    in service as it stops (nor a step back keep a survivor out): the deadline, taken from
    dockerd's event time when the kill arrives, is then counted on the monotonic clock."""
    deadline = 10 + max(STOP_TIMEOUT_S + STOP_MARGIN_S, STOP_GRACE_MIN_S)
    w = watch()
    engine.api.events_of_next_connection = [kill("15")]
    w._session()
    set_time(w, 13, step=step)
    w._session(periodic=True)
    assert w.containers[CID].stopping
    assert "docker_stop_outlived" not in caplog.messages
    set_time(w, deadline + 1, step=step)
    w._session(periodic=True)
    assert w.containers[CID].serving


def test_a_frozen_container_or_one_without_stop_timeout_stays_out(engine) -> None:
    w = watch()
    engine.api.events_of_next_connection = [kill("19")]
    w._session()
    set_time(w, 3600)
    w._session(periodic=True)
    assert w.containers[CID].stopping  # until CONT
    engine.api.config = {"StopTimeout": -1}  # `--stop-timeout -1`: a stop waits forever
    engine.api.started_at = RESTARTED
    set_time(w, 12, RESTARTED)
    engine.api.events_of_next_connection = [kill("15", after=RESTARTED)]
    w._session()
    set_time(w, 86400, RESTARTED)
    w._session(periodic=True)
    assert w.containers[CID].stopping
