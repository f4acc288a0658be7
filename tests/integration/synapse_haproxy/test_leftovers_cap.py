"""Servers that left stay in maintenance up to a cap per backend; the older ones are
deleted, never while a request still runs on them (real HAProxy 2.6, managed)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import urllib.request

from haproxy_helpers import eventually, read_back, server, serves, service
from prometheus_client import CollectorRegistry

from synapse.haproxy import reader as reader_module
from synapse.haproxy.leftovers import MIN_CAP
from synapse.haproxy.runtime import RuntimeClient
from testbed.process import free_port

DEFAULTS = ["mode http", "timeout connect 1s", "timeout client 30s", "timeout server 30s"]
ROUNDS, BATCH = 6, 10  # 60 servers that come and go, a second apart per batch


class Holder:
    """A server that accepts connections and never answers, until ``release``."""

    def __init__(self) -> None:
        self.port = free_port()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._listener.settimeout(0.1)
        self.accepted: list[socket.socket] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._done.is_set():
            try:
                self.accepted.append(self._listener.accept()[0])
            except TimeoutError:
                continue

    def release(self) -> None:
        self._done.set()
        self._thread.join(5)
        for conn in [*self.accepted, self._listener]:
            conn.close()


def get(port: int) -> None:
    with contextlib.suppress(OSError):  # (the held one ends in a 502 once released)
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=40).read()


async def test_leftovers_beyond_the_cap_are_deleted_oldest_first_never_in_flight(
    managed_factory, http_backend_factory, monkeypatch
):
    monkeypatch.setattr(reader_module, "FULL_READ_INTERVAL", 0.5)  # (the sweep plans too)
    b1, b2 = http_backend_factory("b1"), http_backend_factory("b2")
    holder = Holder()
    port = free_port()
    registry = CollectorRegistry()
    controller = managed_factory(registry, defaults=DEFAULTS)
    live = [server("127.0.0.1", b.port, b.name) for b in (b1, b2)]
    slow = server("127.0.0.1", holder.port, "slow")

    def web(*extra):
        return [service("web", [*live, *extra], port=port)]

    runtime = RuntimeClient(controller.settings.runtime_sockets[0])

    async def names() -> set[str]:
        return set((await runtime.running_backends())["web"])

    clients: list[threading.Thread] = []
    try:
        await controller.apply(web(slow), "t")
        await read_back(controller)
        for _ in range(12):  # roundrobin: one of the first three reaches `slow`
            clients.append(threading.Thread(target=get, args=(port,), daemon=True))
            clients[-1].start()
            await asyncio.sleep(0.2)
            if holder.accepted:
                break
        assert holder.accepted, "no request reached the slow server"
        await controller.apply(web(), "t")  # `slow` leaves with a request in flight
        batches = []
        for r in range(ROUNDS):
            hosts = [f"127.0.2.{r * BATCH + i + 1}" for i in range(BATCH)]
            batch = [server(host, 8080, f"pod{r}") for host in hosts]
            batches.append({s.name for s in batch})
            await controller.apply(web(*batch), "t")
            await controller.apply(web(), "t")
            await asyncio.sleep(1.05)  # (HAProxy counts a change's age in whole seconds)

        wanted = {s.name for s in live}
        # 61 servers left: the cap's worth stay, and `slow` (its delete refused: in flight)
        await eventually(lambda: _leq(names, len(wanted) + MIN_CAP + 1), "leftovers deleted")
        present = await names()
        assert wanted | {slow.name} | batches[-1] <= present  # the newest stay
        assert not present & set().union(*batches[:-2])  # the oldest batches went
        assert errors(registry) >= 1  # (`slow`'s delete, refused)
        assert deletes(registry) >= 60 - MIN_CAP

        holder.release()  # its request ends: the delete asked again goes through
        await eventually(lambda: _gone(names, slow.name), "the slow server deleted")
        assert len(await names()) == len(wanted) + MIN_CAP
        await serves(port, {"b1", "b2"})
        assert controller.info.reloads == 0
    finally:
        holder.release()
        for client in clients:
            client.join(10)


def errors(registry: CollectorRegistry) -> float:
    labels = {"kind": "del_leftover"}
    return registry.get_sample_value("synapse_haproxy_runtime_command_errors_total", labels) or 0


def deletes(registry: CollectorRegistry) -> float:
    labels = {"kind": "del_leftover"}
    return registry.get_sample_value("synapse_haproxy_plan_operations_total", labels) or 0


async def _leq(names, limit: int) -> bool:
    return len(await names()) <= limit


async def _gone(names, name: str) -> bool:
    return name not in await names()
