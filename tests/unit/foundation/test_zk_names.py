"""ZooKeeper hosts given by name keep their last addresses (``smartstack.zk_names``); the
named hosts of one connect cycle are looked up together, under one deadline."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import pytest

from smartstack import zk_names


@pytest.fixture
def resolver(monkeypatch: pytest.MonkeyPatch):
    state = {"silent": False, "asked": []}
    release = threading.Event()

    def getaddrinfo(host: str, port: Any, *args: Any, **kwargs: Any) -> list[tuple]:
        state["asked"].append(host)
        if state["silent"]:
            release.wait(10)
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.1.1.1", port))]

    monkeypatch.setattr(zk_names.socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(zk_names, "_kept", {})
    monkeypatch.setattr(zk_names, "_inflight", {})
    yield state
    release.set()


def test_named_hosts_of_one_cycle_wait_together_for_a_silent_resolver(resolver) -> None:
    hosts = [(f"zk{i}.unit.test", 2181) for i in range(5)]
    zk_names.begin_all(hosts)
    deadline = time.monotonic() + zk_names.LOOKUP_WAIT_S
    assert [zk_names.addresses(h, p, deadline) for h, p in hosts] == [[("10.1.1.1", 2181)]] * 5
    resolver["silent"] = True
    began = time.monotonic()
    zk_names.begin_all(hosts)
    deadline = time.monotonic() + zk_names.LOOKUP_WAIT_S
    kept = [zk_names.addresses(h, p, deadline) for h, p in hosts]
    took = time.monotonic() - began
    assert kept == [[("10.1.1.1", 2181)]] * 5
    assert took < 2 * zk_names.LOOKUP_WAIT_S, took  # (before: 1 s per name in turn, 5 s)


def test_an_address_is_not_looked_up(resolver) -> None:
    assert zk_names.addresses("127.0.0.1", 2181) == [("127.0.0.1", 2181)]
    assert zk_names.addresses("::1", 2181) == [("::1", 2181)]
    assert resolver["asked"] == []
