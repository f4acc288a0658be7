"""A DNS name whose answer moves, against a real HAProxy 2.6 (127.0.0.0/8 only).

Synapse looks DNS-named servers up itself; a changed answer changed the line's
``init-addr`` and came by a reload: up to ``restart_interval`` late while requests went to
the old, maybe dead, address (review s38, repro_move.py: 20 names moved 0.25 s apart,
restart_interval 6: 2 reloads, the new address served 2-8 s after its answer, 39 requests
failed; now 0 reloads, ~1 s: HAProxy's retry of the request that met the dead address, 0
failed). ``set server addr`` at the new answer moves it; the file keeps it for later."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from haproxy_helpers import eventually, read_back, server, serves, service
from prometheus_client import CollectorRegistry

from synapse.contract import ApplyOutcome
from synapse.haproxy import dns_addresses
from testbed.httpbackend import HttpBackend
from testbed.process import free_port

NAME = "mv.moves.example"


def reloads(registry) -> float:
    samples = (s for m in registry.collect() for s in m.samples)
    return sum(s.value for s in samples if s.name == "synapse_haproxy_reloads_total")


@pytest.fixture
def answers(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """NAME's answer, as the test sets it (other names: the real resolver)."""
    given = {NAME: "127.0.0.2"}
    real = socket.getaddrinfo

    def lookup(host, port, *args, **kwargs):
        if host in given:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (given[host], 0))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(dns_addresses.socket, "getaddrinfo", lookup)
    monkeypatch.setattr(dns_addresses.ADDRESSES, "refresh_seconds", 0.3)
    return given


async def test_a_moved_answer_is_followed_at_runtime(managed_factory, answers):
    port, front, other = free_port(), free_port(), free_port()
    old = HttpBackend("old", port, host="127.0.0.2").start()
    new = HttpBackend("new", port, host="127.0.0.3").start()
    keep = HttpBackend("keep").start()
    try:
        registry = CollectorRegistry()
        controller = managed_factory(registry, restart_interval=4.0)
        await controller.start()
        api = service("api", [server(NAME, port, "mv")], port=front)
        assert (await controller.apply([api], "start")).reload is ApplyOutcome.DONE
        await read_back(controller)
        await serves(front, {"old"})
        started = reloads(registry)

        answers[NAME] = "127.0.0.3"  # (the old address dies as its answer changes)
        old.stop()
        await serves(front, {"new"})
        # before: a reload (held for restart_interval after the start's)
        assert reloads(registry) == started
        # the file: a later reload or restart starts there
        text = Path(controller.config.config_file_path).read_text()
        assert f"{NAME}:{port} " in text and "init-addr 127.0.0.3" in text, text

        # a later reload (a new service) keeps the new address, and nothing is owed after
        web = service("web", [server("127.0.0.1", keep.port, "keep")], port=other)
        assert (await controller.apply([api, web], "web")).reload is not ApplyOutcome.NONE

        async def reloaded() -> bool:
            return (await controller.apply([api, web], "ended")).reload is ApplyOutcome.NONE

        await eventually(reloaded, "the reload adding web to end")
        await serves(other, {"keep"})
        await serves(front, {"new"})
        again = await controller.apply([api, web], "again")
        assert again.reload is ApplyOutcome.NONE and again.ops == (), again
    finally:
        for backend in (old, new, keep):
            backend.stop()
