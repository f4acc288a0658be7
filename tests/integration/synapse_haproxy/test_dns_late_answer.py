"""A DNS-named server whose name has no answer when it is first rendered (a resolver slower
than the apply's 1 s wait, a record published after the registration), then gets one,
against a real HAProxy 2.6. Rendered `init-addr last,none`, it starts in maintenance with
no address, DOWN; the server-state file synapse dumps before the reload carried that DOWN
into the new worker, where nothing brings a server without health checks back up: never
served (review s33: 503 for 12 s and on; with a resolver answering in 1.5 s, where
HAProxy's own libc lookup served it at once)."""

from __future__ import annotations

import socket

from haproxy_helpers import server, serves, service, web

from synapse.contract import ApplyOutcome
from synapse.haproxy import dns_addresses
from testbed.process import free_port

NAME = "late.dns.test"


async def test_a_name_answered_late_is_served(managed_factory, http_backend_factory, monkeypatch):
    real, answered = socket.getaddrinfo, [False]

    def getaddrinfo(host, port, *args, **kwargs):
        if host != NAME:
            return real(host, port, *args, **kwargs)
        if not answered[0]:
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return real("127.0.0.1", port, *args, **kwargs)

    monkeypatch.setattr(dns_addresses.socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(dns_addresses.ADDRESSES, "refresh_seconds", 0.5)
    b1, b2 = http_backend_factory("b1"), http_backend_factory("b2")
    ports = (free_port(), free_port())
    desired = [web(ports[0], [b1]), service("api", [server(NAME, b2.port, "b2")], port=ports[1])]
    controller = managed_factory(restart_interval=0.0)
    await controller.start()
    assert (await controller.apply(desired, "start")).reload is ApplyOutcome.DONE
    await serves(ports[0], {"b1"})
    answered[0] = True  # the next lookup answers: a reload with `init-addr 127.0.0.1`
    await serves(ports[1], {"b2"})
