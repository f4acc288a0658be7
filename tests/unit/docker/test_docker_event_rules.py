"""The shared Docker event rules (smartstack.docker_events): which `kill` events withdraw a
container, and a healthy container's verdict kept across a dockerd restart (live-restore)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast

import docker.errors  # noqa: F401 - here: urllib3 binds a socket at import (IPv6 probe)
import pytest

from smartstack.docker_events import ContainerInfo, ContainerWatch
from smartstack.docker_signals import parse_signal

CID = "c0ffee" * 8


class InlineLoop:
    """Runs what the watch thread hands over at once (no thread, no event loop)."""

    def call_soon_threadsafe(self, fn: Callable[..., None], *args: Any) -> None:
        fn(*args)


class FakeApi:
    def __init__(self) -> None:
        self.attrs: dict[str, Any] = {}

    def inspect_container(self, container_id: str) -> dict[str, Any]:
        return self.attrs


class FakeClient:
    def __init__(self) -> None:
        self.api = FakeApi()


def attrs(health: str | None = None, stop_signal: str | None = None,
          started_at: str = "2026-01-01T00:00:00.1Z") -> dict[str, Any]:  # fmt: skip
    state: dict[str, Any] = {"Running": True, "StartedAt": started_at}
    if health is not None:
        state["Health"] = {"Status": health}
    config: dict[str, Any] = {"Image": "shop/web:1", "Labels": {}}
    if stop_signal is not None:
        config["StopSignal"] = stop_signal
    return {"Id": CID, "Name": "/web1", "State": state, "Config": config}


def watch() -> tuple[ContainerWatch, list[dict[str, ContainerInfo]]]:
    seen: list[dict[str, ContainerInfo]] = []
    loop = cast(asyncio.AbstractEventLoop, InlineLoop())
    return ContainerWatch("unix:///d.sock", loop, seen.append), seen


def kill(signal: str | None) -> dict[str, Any]:
    attributes = {"name": "web1"} if signal is None else {"name": "web1", "signal": signal}
    return {"Action": "kill", "id": CID, "Actor": {"ID": CID, "Attributes": attributes}}


def after_kill(signal: str | None, stop_signal: str | None = None) -> ContainerInfo:
    w, _ = watch()
    client = FakeClient()
    client.api.attrs = attrs(stop_signal=stop_signal)
    w._apply_reset({CID: ContainerInfo.from_inspect(client.api.attrs)})
    w._handle(client, kill(signal))
    return w.containers[CID]


# --- kill events -------------------------------------------------------------------------


@pytest.mark.parametrize("signal", ["1", "10", "12", "14", "18", "21", "22", "28"])
def test_signals_that_do_not_stop_the_container_leave_it_serving(signal: str) -> None:
    info = after_kill(signal)  # HUP, USR1/2, ALRM, CONT, gunicorn's TTIN/TTOU, WINCH
    assert info.serving and not info.stopping


@pytest.mark.parametrize("signal", ["15", "2", "9"])
def test_ending_signals_withdraw_it(signal: str) -> None:
    assert after_kill(signal).stopping and not after_kill(signal).serving


def test_quit_withdraws_only_the_containers_whose_stop_signal_it_is() -> None:
    """A JVM answers QUIT with a thread dump and runs on; nginx's image stops with it."""
    assert after_kill("3").serving
    assert after_kill("3", "SIGQUIT").stopping


@pytest.mark.parametrize("stop_signal", ["SIGWINCH", "WINCH", "sigwinch", "28", " 28 "])
def test_the_containers_own_stop_signal_withdraws_it(stop_signal: str) -> None:
    assert after_kill("28", stop_signal).stopping  # Apache's graceful stop
    assert not after_kill("21", stop_signal).stopping
    assert after_kill("15", stop_signal).stopping  # `docker kill` still ends it


def test_an_unknown_stop_signal_is_ignored_and_a_silent_kill_still_withdraws() -> None:
    assert not after_kill("28", "SIGNOPE").stopping
    assert after_kill("9", "SIGNOPE").stopping
    assert after_kill(None).stopping  # dockerd always says which; if not: the safe side


def test_a_start_after_the_stop_signal_serves_again() -> None:
    w, _ = watch()
    client = FakeClient()
    client.api.attrs = attrs()
    w._handle(client, kill("15"))
    assert w.containers[CID].stopping
    w._handle(client, {"Action": "start", "id": CID})
    assert w.containers[CID].serving


def test_a_frozen_container_is_withdrawn_until_cont() -> None:
    """STOP/TSTP freeze it (its port accepts, nothing answers); CONT thaws it. A CONT after
    a stop signal does not bring back a container that is being stopped."""
    w, _ = watch()
    client = FakeClient()
    client.api.attrs = attrs()
    for frozen in ("19", "20"):
        w._handle(client, kill(frozen))
        assert w.containers[CID].stopping and not w.containers[CID].serving
        w._handle(client, kill("18"))
        assert w.containers[CID].serving
    w._handle(client, kill("15"))
    w._handle(client, kill("18"))
    assert not w.containers[CID].serving


def test_parse_signal() -> None:
    assert [parse_signal(s) for s in ("SIGTERM", "term", "15", "SIGRTMIN+3", "RTMAX-1")] == [
        15, 15, 15, 37, 63]  # fmt: skip
    assert [parse_signal(s) for s in ("", None, "0", "99", "SIGFOO", "RTMIN+99", "-3")] == [
        None] * 7  # fmt: skip


# --- health across a dockerd restart --------------------------------------------------------


def test_live_restore_keeps_a_healthy_container_serving_until_a_real_result() -> None:
    w, seen = watch()
    w._apply_reset({CID: ContainerInfo.from_inspect(attrs("healthy"))})
    # dockerd restarted (live-restore): same container, its health reset to "starting"
    w._apply_reset({CID: ContainerInfo.from_inspect(attrs("starting"))})
    assert all(batch[CID].serving for batch in seen)
    w._apply_update(CID, ContainerInfo.from_inspect(attrs("starting")))  # any other event
    assert w.containers[CID].serving
    w._apply_update(CID, ContainerInfo.from_inspect(attrs("unhealthy")))
    assert not w.containers[CID].serving
    w._apply_update(CID, ContainerInfo.from_inspect(attrs("starting")))  # not healthy before
    assert not w.containers[CID].serving
    w._apply_update(CID, ContainerInfo.from_inspect(attrs("healthy")))
    assert w.containers[CID].serving and not w.containers[CID].health_held


def test_the_kept_verdict_ends_with_a_healthy_result_too() -> None:
    w, _ = watch()
    w._apply_update(CID, ContainerInfo.from_inspect(attrs("healthy")))
    w._apply_update(CID, ContainerInfo.from_inspect(attrs("starting")))
    assert w.containers[CID].health_held
    w._apply_update(CID, ContainerInfo.from_inspect(attrs("healthy")))
    assert w.containers[CID].health == "healthy" and not w.containers[CID].health_held


def test_a_container_that_really_restarted_waits_for_healthy() -> None:
    w, _ = watch()
    w._apply_reset({CID: ContainerInfo.from_inspect(attrs("healthy"))})
    restarted = attrs("starting", started_at="2026-01-01T00:05:00.2Z")
    w._apply_reset({CID: ContainerInfo.from_inspect(restarted)})
    assert not w.containers[CID].serving
    w._apply_update(CID, ContainerInfo.from_inspect(restarted))
    assert not w.containers[CID].serving


def test_a_restarting_container_does_not_run() -> None:
    """A restart policy's container between two runs (a crash loop): dockerd says Running and
    Restarting; it has no process and no published port, so it neither serves nor is a label
    error for nerve."""
    restarting = attrs()
    restarting["State"]["Restarting"] = True
    info = ContainerInfo.from_inspect(restarting)
    assert not info.running and not info.serving
    assert ContainerInfo.from_inspect(attrs()).serving
