"""Synapse looks DNS-named servers up itself (``dns_addresses``): HAProxy's own lookup at
parse time waited 20 s per name for a resolver that does not answer (every ``haproxy -c``
outlived ``reload_timeout``), and ``init-addr last`` never followed a moved name."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest
from haproxy_helpers import render, server, service

from synapse.haproxy import dns_addresses
from synapse.haproxy.dns_addresses import DnsAddresses
from synapse.haproxy.hosts import without_init_addr


class FakeDns:
    """getaddrinfo's stand-in: an answer per name, an error, or a hang until released."""

    def __init__(self) -> None:
        self.answers: dict[str, list[str] | Exception] = {}
        self.release = threading.Event()
        self.asked: list[str] = []

    def __call__(self, host: str, port: object, **kwargs: object) -> list[tuple]:
        self.asked.append(host)
        answer = self.answers.get(host, "hang")
        if answer == "hang":
            self.release.wait(5)
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        if isinstance(answer, Exception):
            raise answer
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, 0)) for a in answer]


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch):
    fake = FakeDns()
    monkeypatch.setattr(dns_addresses.socket, "getaddrinfo", fake)
    yield fake
    fake.release.set()


async def test_a_silent_resolver_costs_one_short_wait_then_none(dns: FakeDns):
    addresses = DnsAddresses()
    began = time.monotonic()
    await addresses.settle({"db.example"}, wait=0.3)
    assert 0.25 < time.monotonic() - began < 1.0
    assert addresses.address("db.example") is None
    began = time.monotonic()
    await addresses.settle({"db.example"}, wait=0.3)  # (the same lookup: not waited again)
    assert time.monotonic() - began < 0.1 and dns.asked == ["db.example"]


async def test_an_answer_is_kept_across_reorders_and_failures_not_a_missing_name(dns: FakeDns):
    addresses = DnsAddresses(refresh_seconds=0)
    changed: list[str] = []

    async def on_change() -> None:
        changed.append(str(addresses.address("db.example")))

    async def ask() -> None:  # (a name with an answer is refreshed without a wait)
        await addresses.settle({"db.example"})
        await asyncio.sleep(0.25)  # (on_change: after COALESCE_S)

    addresses.start(on_change)
    try:
        dns.answers["db.example"] = ["10.0.0.5", "10.0.0.6"]
        await ask()
        assert addresses.address("db.example") == "10.0.0.5"
        dns.answers["db.example"] = ["10.0.0.6", "10.0.0.5"]  # (round-robin DNS)
        await ask()
        assert addresses.address("db.example") == "10.0.0.5"
        dns.answers["db.example"] = socket.gaierror(socket.EAI_AGAIN, "try again")
        await ask()
        assert addresses.address("db.example") == "10.0.0.5"
        dns.answers["db.example"] = ["10.0.0.7"]  # moved
        await ask()
        assert addresses.address("db.example") == "10.0.0.7"
        dns.answers["db.example"] = socket.gaierror(socket.EAI_NONAME, "no such name")
        await ask()
        assert addresses.address("db.example") is None
        assert changed == ["10.0.0.5", "10.0.0.7", "None"]
    finally:
        await addresses.stop()


def test_an_operators_init_addr_wins_over_synapses_address():
    def line(**haproxy: object) -> str:
        named = [server("db.example", 80, "d", address="10.0.0.5")]
        (spec,) = render([service("web", named, **haproxy)]).backends["web"].servers.values()
        return spec.line

    assert line(server_options="check init-addr libc").endswith("check init-addr libc")
    assert "10.0.0.5" not in line(server_options="check", backend=["default-server init-addr none"])
    assert line(server_options="check").endswith("check init-addr 10.0.0.5")


async def test_the_rendered_line_carries_synapses_address_and_never_libc(dns: FakeDns):
    dns.answers["db.example"] = ["10.0.0.5"]
    addresses = DnsAddresses()
    svc = service("web", [server("db.example", 80, "d"), server("gone.example", 80, "g")])
    await addresses.settle({"db.example"})
    desired = addresses.renew([svc])
    assert addresses.renew(desired)[0] is desired[0]  # (unchanged: the renderer's cache)
    text = render(desired).text
    lines = {line.split()[1]: line for line in text.splitlines() if "server " in line}
    assert lines["d_db.example:80"].endswith(" init-addr 10.0.0.5")
    assert lines["g_gone.example:80"].endswith(" init-addr last,none")
    dns.answers["db.example"] = ["10.0.0.7"]  # moved: a new object, a new line
    addresses.refresh_seconds = 0
    await addresses.settle({"db.example"})
    await asyncio.sleep(0.05)
    moved = addresses.renew(desired)
    assert moved[0] is not desired[0] and moved[0].servers[1] is desired[0].servers[1]
    assert "init-addr 10.0.0.7" in render(moved).text


@pytest.mark.parametrize(
    "added",
    [
        "init-addr last,none",
        "init-addr last,libc,none",
        "init-addr 10.0.0.5",
        "init-addr fd00::1",
    ],
)
def test_what_synapse_added_is_left_out_when_read_back(added: str):
    assert without_init_addr(f"check {added}") == "check"
    assert without_init_addr(added) == ""
    assert without_init_addr("check init-addr libc") == "check init-addr libc"


def test_names_scans_only_the_services_that_changed(monkeypatch: pytest.MonkeyPatch):
    """An apply runs it over every service: scanning every server cost 7-10 ms an apply at
    1,000 x 20 (review s33); a service handed over as the same object is not read again."""
    asked: list[str] = []

    def counted(host: str) -> bool:
        asked.append(host)
        return host[0].isdigit()

    monkeypatch.setattr(dns_addresses, "is_ip", counted)
    addresses = DnsAddresses()
    first = [service(f"s{i}", [server(f"10.0.0.{i}", 80, "a")]) for i in range(50)]
    assert addresses.names(first) == set() and len(asked) == 50
    asked.clear()
    second = list(first)
    second[7] = service("s7", [server("db.example", 80, "d")])
    assert addresses.names(second) == {"db.example"} and asked == ["db.example"]
    assert addresses.names(first[:49]) == set()  # (another length: read whole)


async def test_renew_redoes_only_the_services_that_changed(dns: FakeDns, monkeypatch):
    """An apply renewed every DNS-named server (a new object each: the reconciler's carry
    no address), 130 ms an apply at 1,000 x 20 named hosts (review s33): now only the
    services handed over anew, or all once an answer changed."""
    addresses = DnsAddresses(refresh_seconds=0)
    for i in range(10):
        dns.answers[f"n{i}.example"] = [f"10.0.0.{i + 1}"]
    first = [
        service(f"s{i}", [server(f"n{(i + j) % 10}.example", 80, f"i{j}") for j in range(4)])
        for i in range(50)
    ]
    await addresses.settle(addresses.names(first))
    await asyncio.sleep(0.05)
    out = addresses.renew(first)
    assert all(s.address for svc in out for s in svc.servers)
    calls: list[str] = []
    real = addresses._with_address
    monkeypatch.setattr(addresses, "_with_address", lambda s: calls.append(s.host) or real(s))
    second = list(first)
    second[7] = service("s7", [server("n1.example", 81, "x")])
    again = addresses.renew(second)
    assert len(calls) == 1 and again[7].servers[0].address == "10.0.0.2"
    assert all(again[i] is out[i] for i in range(50) if i != 7)
    calls.clear()
    assert addresses.renew(again) == again and calls == []  # (the renewed list handed back)
    dns.answers["n3.example"] = ["10.0.0.99"]  # an answer changed: every service again
    await addresses.settle({"n3.example"})
    await asyncio.sleep(0.05)
    moved = addresses.renew(second)
    assert len(calls) == 49 * 4 + 1
    assert {s.address for svc in moved for s in svc.servers if s.host == "n3.example"} == {
        "10.0.0.99"
    }


async def test_answers_that_change_together_call_on_change_once(dns: FakeDns):
    """The first answers after a start called on_change (an apply) once each: 2,000 names
    were 2,000 applies in a row (review s33)."""
    addresses = DnsAddresses()
    calls: list[int] = []

    async def on_change() -> None:
        calls.append(len(addresses._answers))
        await asyncio.sleep(0.01)

    for i in range(50):
        dns.answers[f"n{i}.example"] = [f"10.0.0.{i + 1}"]
    addresses.start(on_change)
    try:
        await addresses.settle({f"n{i}.example" for i in range(50)})
        await asyncio.sleep(0.4)
        assert 1 <= len(calls) <= 3 and calls[-1] == 50, calls
        dns.answers["n1.example"] = ["10.0.0.99"]  # a change later: one call more
        addresses.refresh_seconds = 0
        await addresses.settle({"n1.example"})
        await asyncio.sleep(0.4)
        assert addresses.address("n1.example") == "10.0.0.99" and len(calls) <= 4, calls
    finally:
        await addresses.stop()


def test_a_name_synapse_answered_is_added_at_runtime_at_that_address():
    # HAProxy 2.6's `add server B/S name:port` registers the name unresolved: added at
    # synapse's answer instead of waiting for a reload (review s37: up to 2 s late)
    answered = server("db.example", 80, "d", address="10.0.0.5")
    six = server("six.example", 80, "s", address="fd00::1")
    unanswered = server("gone.example", 80, "g")
    specs = render([service("web", [answered, six, unanswered])]).backends["web"].servers
    assert specs[answered.name].addable and specs[answered.name].add_address == "10.0.0.5:80"
    assert specs[six.name].add_address == "[fd00::1]:80"
    assert not specs[unanswered.name].addable  # (a reload: `init-addr last,none`)
    # a backend whose default-server resolves through HAProxy: an added server lacks it
    resolved = service("api", [answered], backend=["default-server resolvers dns"])
    assert not render([resolved]).backends["api"].servers[answered.name].addable
