"""A lost zone fails no request: HAProxy fails over to the other zones by itself.

With zone routing, the other zones' servers are HAProxy backups (``option allbackups``)
weighted as the spill would weigh them, and in managed mode a refused connection marks a
local server down at once (``observe layer4``, checks bring it back). So when the whole
local zone dies (its servers and its nerves: the records stay in the registry until the
sessions expire) HAProxy moves the traffic at the first failed connection, with synapse's
desired state unchanged. Real HAProxy 2.6 on 127.0.0.1.
"""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from haproxy_helpers import answered_by, eventually, haproxy_config, render, section, server

from synapse.config import ServiceConfig
from synapse.model import DesiredService
from synapse.zone_apply import ZoneRouter
from testbed.process import free_port

REQUESTS, CLIENTS, DEADLINE_S = 150, 3, 30.0


def zoned(
    port: int, backends: dict[str, Any], routing: dict[str, Any] | None = None, **haproxy: Any
) -> list[DesiredService]:
    """`web` with zone routing from az1 over ``backends`` (name -> HttpBackend, zone = the
    name's first three letters), as the reconciler hands it over in managed mode."""
    config = ServiceConfig.model_validate({
        "discovery": {"method": "base"},
        "haproxy": {"port": port, **haproxy},
        "zone_routing": {"zones": ["az1", "az2"], **(routing or {})},
    })  # fmt: skip
    servers = [
        server("127.0.0.1", b.port, name, labels=(("zone", name[:3]),))
        for name, b in backends.items()
    ]
    router = ZoneRouter("az1")
    router.backends.managed = True
    return router.routed(DesiredService("web", config, servers))


def load(port: int, results: list[str], stop: threading.Event, headers: dict[str, str]) -> None:
    """One client: GETs until ``stop`` or its share of REQUESTS, each answer's body or error."""
    deadline = time.monotonic() + DEADLINE_S
    request = urllib.request.Request(f"http://127.0.0.1:{port}/", headers=headers)
    for _ in range(REQUESTS // CLIENTS):
        if stop.is_set() or time.monotonic() > deadline:
            return
        try:
            with urllib.request.urlopen(request, timeout=5) as answer:
                results.append(answer.read().decode())
        except urllib.error.HTTPError as err:
            results.append(str(err.code))
        except OSError as err:
            results.append(type(err).__name__)
        time.sleep(0.01)


async def lose_the_local_zone(
    managed_factory,
    http_backend_factory,
    headers: dict[str, str] | None = None,
    routing: dict[str, Any] | None = None,
    **haproxy: Any,
) -> list[str]:
    """Serve from az1 under load, stop both az1 servers mid-load; every answer."""
    backends = {n: http_backend_factory(n) for n in ("az1-a", "az1-b", "az2-a", "az2-b")}
    port = free_port()
    controller = managed_factory()
    await controller.apply(zoned(port, backends, routing, **haproxy), "t")
    await eventually(lambda: answered_by(port, 1), "HAProxy answering")
    assert await answered_by(port, 12) == {"az1-a", "az1-b"}  # the local zone serves
    results: list[str] = []
    stop = threading.Event()
    args = (port, results, stop, headers or {})
    clients = [threading.Thread(target=load, args=args) for _ in range(CLIENTS)]
    for client in clients:
        client.start()
    try:
        time.sleep(0.3)
        backends["az1-a"].stop()  # the whole zone goes; the registry still lists it
        backends["az1-b"].stop()
        for client in clients:
            client.join(DEADLINE_S + 5)
    finally:
        stop.set()
    return results


def test_zone_routed_backends_fail_over_and_are_checked(tmp_path: Path) -> None:
    backends = {n: type("B", (), {"port": free_port()})() for n in ("az1-a", "az2-a")}
    config = haproxy_config(config_file_path=str(tmp_path / "h.cfg"), managed={})
    text = render(zoned(3000, backends, retries=False), config).text
    lines = section(text, "backend web")
    assert "option allbackups" in lines
    assert (
        "default-server check inter 10000 fastinter 1000 downinter 1000 rise 2 fall 2 "
        "observe layer4 error-limit 1 on-error mark-down"
    ) in lines
    [backup] = [line for line in text.splitlines() if line.strip().startswith("server az2-a")]
    assert backup.endswith("weight 256 backup")
    off = zoned(3000, backends, retries=False, health_check={"enabled": False})
    assert section(render(off, config).text, "backend web")[1] == "option allbackups"


async def test_a_lost_local_zone_fails_no_request(managed_factory, http_backend_factory) -> None:
    results = await lose_the_local_zone(managed_factory, http_backend_factory)
    failed = [r for r in results if not r.startswith("az")]
    assert len(results) >= REQUESTS // 2 and not failed, (len(results), failed[:5])
    assert results[-1].startswith("az2"), results[-5:]  # the other zone serves now


async def test_requests_naming_a_lost_zone_fail_over_too(
    managed_factory, http_backend_factory
) -> None:
    """`X-Zone: az1` picks az1's own backend; its backups are the other zone's servers."""
    results = await lose_the_local_zone(
        managed_factory,
        http_backend_factory,
        headers={"X-Zone": "az1"},
        routing={"header": "X-Zone"},
        listen=["mode http"],
    )
    failed = [r for r in results if not r.startswith("az")]
    assert len(results) >= REQUESTS // 2 and not failed, (len(results), failed[:5])
    assert results[-1].startswith("az2"), results[-5:]


async def test_a_zone_with_nowhere_to_fail_over_rides_out_a_blip(
    managed_factory, http_backend_factory
) -> None:
    """Only the local zone, named or seen: no backup could take over, so no `observe` (it
    would mark the last server down at its first refused connection: 503s until the checks
    bring it back). A 0.4 s restart of the only server is ridden out by retries."""
    only = http_backend_factory("az1-a")
    port = free_port()
    controller = managed_factory()
    services = zoned(port, {"az1-a": only}, {"zones": ["az1"]})
    lines = section(render(services, controller.config).text, "backend web")
    assert not any("observe" in line for line in lines)
    assert any(line.startswith("default-server check") for line in lines)
    await controller.apply(services, "t")
    await eventually(lambda: answered_by(port, 1), "HAProxy answering")
    results: list[str] = []
    stop = threading.Event()
    clients = [threading.Thread(target=load, args=(port, results, stop, {})) for _ in range(2)]
    for client in clients:
        client.start()
    try:
        time.sleep(0.3)
        only.stop()
        time.sleep(0.4)
        only.start()
        for client in clients:
            client.join(DEADLINE_S + 5)
    finally:
        stop.set()
    failed = [r for r in results if not r.startswith("az")]
    assert results and not failed, (len(results), failed[:5])


async def test_without_health_information_haproxy_cannot_fail_over(
    managed_factory, http_backend_factory
) -> None:
    """The control: no checks, so no `observe`: the dead local servers stay UP in HAProxy
    and requests fail until the registry drops them (this is what the default prevents)."""
    results = await lose_the_local_zone(
        managed_factory, http_backend_factory, health_check={"enabled": False}
    )
    assert any(r == "503" for r in results), results[-5:]
