"""A service whose bind address is not on this host (a VIP not added yet), real HAProxy 2.6.

Before, `haproxy -c` (which binds nothing) passed it, and then the start failed for every
service ("cannot bind socket (Cannot assign requested address)", retried), and a reload
adding it paused the old worker's frontends ~2 s per try: 121 of 451 requests to an
unrelated service were refused. Now a test bind finds the address missing before HAProxy
is asked (``not_here``): that service is left out, the others are served throughout, and
once the address is here it comes in (the port_taken recheck), with no new apply.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import threading
import time
import urllib.request

import pytest
from haproxy_helpers import eventually, server, serves, service, web
from prometheus_client import CollectorRegistry

from synapse.contract import ApplyOutcome
from synapse.haproxy import not_here
from testbed.process import free_port

ABSENT = "192.0.2.1"  # TEST-NET-1: on no interface of a test host
LEFT_OUT = "not in HAProxy (its bind address is not on this host)"


@pytest.fixture(autouse=True)
def _absent() -> None:
    try:
        not_here.try_bind(ABSENT)
    except OSError as err:
        if err.errno == errno.EADDRNOTAVAIL:
            return
    pytest.skip(f"{ABSENT} can be bound on this host")


def _api(port: int, backend, address: str = ABSENT) -> object:
    return service(
        "api", [server("127.0.0.1", backend.port, backend.name)], port=port, bind_address=address
    )


class Load:
    """GETs to one port every 20 ms in a thread (at most 1,000): the failed ones counted."""

    def __init__(self, port: int) -> None:
        self.port, self.ok, self.failed = port, 0, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set() and self.ok + len(self.failed) < 1000:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/", timeout=3) as r:
                    r.read()
                self.ok += 1
            except OSError as err:
                self.failed.append(f"{time.monotonic():.2f} {err}")
            time.sleep(0.02)

    def stop(self) -> tuple[int, list[str]]:
        self._stop.set()
        self._thread.join()
        return self.ok, self.failed


async def test_a_start_serves_the_others_when_one_bind_address_is_not_here(
    managed_factory, http_backend_factory
):
    b1, b2 = http_backend_factory("b1"), http_backend_factory("b2")
    port, other = free_port(), free_port()
    controller = managed_factory(CollectorRegistry())
    result = await controller.apply([web(port, [b1]), _api(other, b2)], "start")
    # Before: FAILED, HAProxy never started ("cannot bind socket"), web refused connections.
    assert result.reload is ApplyOutcome.DONE, result
    await serves(port, {"b1"})
    isolated = controller.status()["isolated_services"]["api"]
    assert isolated["running"] == LEFT_OUT
    assert f"bind address not on this host: {ABSENT}:{other}" in isolated["error"]
    # Said as degraded (a standby LB runs without its VIP), not as a failure of HAProxy.
    assert controller.health() == []
    [said] = controller.degraded()
    assert said.startswith(f"api: bind address not on this host: {ABSENT}:{other}"), said
    assert controller.status()["last_reload_error"] is None


async def test_adding_a_service_whose_address_is_not_here_fails_no_request_of_the_others(
    managed_factory, http_backend_factory
):
    b1, b2, b3 = (http_backend_factory(f"b{i}") for i in (1, 2, 3))
    port, other, third_port = free_port(), free_port(), free_port()
    controller = managed_factory(CollectorRegistry(), restart_interval=0)
    await controller.apply([web(port, [b1])], "start")
    await serves(port, {"b1"})
    load = Load(port)
    try:
        await asyncio.sleep(0.5)
        added = await controller.apply([web(port, [b1]), _api(other, b2)], "api added")
        assert added.reload is ApplyOutcome.INVALID and added.isolated == ("api",), added
        third = service("third", [server("127.0.0.1", b3.port, "b3")], port=third_port)
        later = await controller.apply([web(port, [b1]), _api(other, b2), third], "third")
        assert later.reload is ApplyOutcome.DONE, later
        await serves(third_port, {"b3"})
        await asyncio.sleep(3)  # (a retried bind paused the frontends ~2 s per try)
    finally:
        ok, failed = load.stop()
    # Before: bursts of refused connections while HAProxy retried the bind, and "third"
    # never came in (every later reload failed).
    assert ok > 50 and failed == [], failed[:5]
    assert controller.health() == []


def absent_until_added(monkeypatch: pytest.MonkeyPatch, vip: str) -> dict[str, bool]:
    """``vip``, a loopback address, taken for absent (the test bind's answer is replaced)
    until the test sets ``here[vip] = True`` (keepalived adds it); ``here`` returned."""
    here = {vip: False}
    real = not_here.is_here
    monkeypatch.setattr(not_here, "is_here", lambda ip, bind: here.get(ip, real(ip, bind)))
    return here


async def serves_b2(vip: str, port: int) -> bool:
    def fetch() -> str:
        with urllib.request.urlopen(f"http://{vip}:{port}/", timeout=3) as answer:
            return answer.read().decode()

    return await asyncio.to_thread(fetch) == "b2"


async def test_a_service_comes_in_once_its_address_is_here(
    managed_factory, http_backend_factory, monkeypatch
):
    """A loopback address taken for absent (the test bind's answer is replaced) until it
    "is added": the recheck brings the service in without an apply."""
    b1, b2 = http_backend_factory("b1"), http_backend_factory("b2")
    port, other, vip = free_port(), free_port(), "127.0.0.77"
    here = absent_until_added(monkeypatch, vip)
    controller = managed_factory(CollectorRegistry(), restart_interval=0)
    await controller.apply([web(port, [b1]), _api(other, b2, vip)], "start")
    await serves(port, {"b1"})
    assert controller.status()["isolated_services"]["api"]["running"] == LEFT_OUT
    with pytest.raises(OSError):
        socket.create_connection((vip, other), timeout=1).close()
    load = Load(port)
    try:
        here[vip] = True  # keepalived adds the VIP
        await eventually(lambda: serves_b2(vip, other), "api to be served on its address")
        assert not controller.status()["isolated_services"]
        await serves(port, {"b1"})
    finally:
        ok, failed = load.stop()
    assert ok > 0 and failed == [], failed[:5]


async def test_a_service_added_alone_comes_in_once_its_address_is_here(
    managed_factory, http_backend_factory, monkeypatch
):
    """The SIGHUP's only change is the service waiting for its address: nothing reloads
    then, and the recheck's apply still brings it in."""
    b1, b2 = http_backend_factory("b1"), http_backend_factory("b2")
    port, other, vip = free_port(), free_port(), "127.0.0.78"
    here = absent_until_added(monkeypatch, vip)
    controller = managed_factory(CollectorRegistry(), restart_interval=0)
    await controller.apply([web(port, [b1])], "start")
    await serves(port, {"b1"})
    added = await controller.apply([web(port, [b1]), _api(other, b2, vip)], "api added")
    assert added.reload is ApplyOutcome.INVALID and added.isolated == ("api",), added
    assert controller.health() == [] and len(controller.degraded()) == 1
    here[vip] = True
    await eventually(lambda: serves_b2(vip, other), "api to be served on its address")
    assert not controller.status()["isolated_services"] and controller.degraded() == []


async def test_a_standby_with_every_service_waiting_for_its_vip_is_degraded_not_failing(
    managed_factory, http_backend_factory
):
    """Every service of a standby LB binds the VIP it does not hold: /health must not fail
    (keepalived's chk_synapse would keep it from ever taking the VIP; review s31 reverted a
    503 for this case: a typo in bind_address cannot be told from it, `-k` notes that)."""
    b2 = http_backend_factory("b2")
    controller = managed_factory(CollectorRegistry())
    await controller.apply([_api(free_port(), b2)], "start")
    assert controller.status()["isolated_services"]["api"]["running"] == LEFT_OUT
    assert controller.health() == [] and len(controller.degraded()) == 1
