"""A DNS name whose answer moves (a cloud load balancer's name, a DNS failover), planned.

Synapse looks DNS-named servers up itself and renders ``init-addr <answer>``; a changed
answer changed the line's options, which only a reload could apply: at an edge with many
such names every move was a reload, and the new address waited up to ``restart_interval``
while traffic went to the old, maybe dead, one (review s38, repro_move.py: 20 names moved
0.25 s apart, restart_interval 6: 2 reloads, served 2-8 s late, 39 requests failed). HAProxy
2.6's ``set server addr`` refuses names but takes the answer."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket

from haproxy_helpers import render, running_from, server, service, simulate, with_servers

from synapse.haproxy import dns_addresses
from synapse.haproxy.desired import DesiredConfig
from synapse.haproxy.ops import SetAddr
from synapse.haproxy.planner import plan
from synapse.haproxy.running import Capabilities, RunningState

V26 = Capabilities(version=(2, 6, 12))
NAME = "db.example"


def named(address: str = "", host: str = NAME) -> list:
    return [server(host, 80, "d", address=address)]


def running_at(desired: DesiredConfig, address: str) -> RunningState:
    """HAProxy running ``desired``, its DNS-named server at ``address`` (the fake's
    ``running_from`` puts the name where HAProxy shows an address)."""
    running = running_from(desired)
    assert running.backends is not None
    (only,) = running.backends["web"].values()
    return with_servers(running, "web", dataclasses.replace(only, addr=address))


def kinds(result) -> list[str]:
    return [kind for kind, _ in result.reload.reasons] if result.reload else []


def test_a_moved_answer_is_set_at_runtime_not_reloaded():
    before = render([service("web", named("10.0.0.5"))])
    after = render([service("web", named("10.0.0.6"))])
    (spec,) = after.backends["web"].servers.values()
    result = plan(after, running_at(before, "10.0.0.5"), V26)
    # before: a reload (server_options: the line's init-addr changed), no op
    assert kinds(result) == [] and result.ops == (SetAddr("web", spec.name, "10.0.0.6", 80),)
    assert "init-addr 10.0.0.6" in spec.line  # (the file: a later reload or restart keeps it)
    done = simulate(running_at(before, "10.0.0.5"), after, result.ops)
    assert plan(after, done, V26).empty  # nothing owed once HAProxy has it


def test_a_moved_answer_with_a_new_weight_is_two_runtime_commands():
    """Review cr-dns: the move compared the whole rest of the line, weight included."""
    before = render([service("web", [server(NAME, 80, "d", address="10.0.0.5", weight=10)])])
    after = render([service("web", [server(NAME, 80, "d", address="10.0.0.6", weight=20)])])
    result = plan(after, running_at(before, "10.0.0.5"), V26)
    assert kinds(result) == []  # before: a reload (server_options)
    assert {type(op).__name__ for op in result.ops} == {"SetAddr", "SetWeight"}


def test_an_ipv6_answer_and_a_server_left_at_an_old_address_are_set_too():
    after = render([service("web", named("fd00::6"))])
    (spec,) = after.backends["web"].servers.values()
    # the same line, HAProxy elsewhere (a runtime change lost, a state file): moved back
    result = plan(after, running_at(after, "fd00::5"), V26)
    assert kinds(result) == [] and result.ops == (SetAddr("web", spec.name, "fd00::6", 80),)
    assert plan(after, running_at(after, "fd00:0::6"), V26).empty  # (the same address)


def test_what_runtime_cannot_follow_still_reloads():
    running = running_at(render([service("web", named("10.0.0.5"))]), "10.0.0.5")
    # the name left DNS: no address to set (the reload's `init-addr last,none` keeps it)
    assert kinds(plan(render([service("web", named(""))]), running, V26)) == ["server_options"]
    # its first answer: HAProxy has no address for it (`init-addr last,none`: maintenance)
    unanswered = render([service("web", named(""))])
    first = plan(render([service("web", named("10.0.0.5"))]), running_at(unanswered, "-"), V26)
    assert kinds(first) == ["server_options"]
    # HAProxy resolves the name itself (`resolvers`) or the operator set `init-addr`
    for options in ("check resolvers dns", "check init-addr libc"):
        old = render([service("web", named("10.0.0.5"), server_options=options)])
        new = render([service("web", named("10.0.0.6"), server_options=options)])
        assert plan(new, running_at(old, "10.0.0.5"), V26).ops == ()
    resolved = ["default-server resolvers dns"]
    old = render([service("web", named("10.0.0.5"), backend=resolved)])
    new = render([service("web", named("10.0.0.6"), backend=resolved)])
    result = plan(new, running_at(old, "10.0.0.5"), V26)
    assert result.ops == () and kinds(result) == ["server_options"]
    # no runtime API: every changed server line reloads
    no_api = RunningState(backends=None, config=running.config)
    caps = Capabilities(version=None, runtime_api=False)
    assert "no_runtime" in kinds(plan(render([service("web", named("10.0.0.6"))]), no_api, caps))


async def test_a_moved_answer_is_logged_a_first_one_is_not(monkeypatch, caplog):
    answer = ["10.0.0.5"]

    def lookup(host, port, **kwargs):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answer[0], 0))]

    monkeypatch.setattr(dns_addresses.socket, "getaddrinfo", lookup)
    addresses = dns_addresses.DnsAddresses(refresh_seconds=0)
    caplog.set_level(logging.INFO, logger="synapse.haproxy.dns")
    await addresses.settle({NAME})
    answer[0] = "10.0.0.6"
    await addresses.settle({NAME})
    for _ in range(300):  # (looked up on a thread: at most 3 s)
        if addresses.address(NAME) == "10.0.0.6":
            break
        await asyncio.sleep(0.01)
    moves = [r.smartstack_fields for r in caplog.records if r.msg == "dns_answer_changed"]
    assert moves == [{"host": NAME, "before": "10.0.0.5", "after": "10.0.0.6"}]
