"""A reload must not fail a client's next request on a kept-alive connection (real HAProxy).

HAProxy 2.4+ closes idle frontend connections at once when a reload soft-stops the old
worker; a client (a pool, an L7 balancer in front) that sends its next request on such a
connection just as it closes gets no answer: a 502 behind an ALB, a reset in an app.
synapse adds ``option idle-close-on-response`` to HTTP frontends: the old worker answers
that request, then closes the connection. Managed mode knows its binary's version; the
Airbnb way (HAProxy its own unit, docs/deploy.md) reloads too: there the running
HAProxy's version decides (its runtime API).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path

import pytest
from haproxy_helpers import haproxy_config, managed_config, section, server, serves, service, web
from prometheus_client import CollectorRegistry

from synapse.contract import ApplyOutcome
from synapse.haproxy.controller import HAProxyController
from synapse.haproxy.render import Renderer
from synapse.haproxy.settings import IDLE_CLOSE_SINCE, binary_version
from testbed.process import free_port

CLIENTS = 8
REQUEST = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"


def _exchange(conn: socket.socket) -> bytes:
    """One request on ``conn``; the response head and body as far as read (b"": closed)."""
    conn.sendall(REQUEST)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        (int(line.split(b":")[1]) for line in head.split(b"\r\n")
         if line.lower().startswith(b"content-length:")), 0,
    )  # fmt: skip
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def _ok(answer: bytes) -> bool:
    return answer.split(b"\r\n", 1)[0].split(b" ")[1:2] == [b"200"]


def _closed_by_peer(connections: list[socket.socket]) -> int:
    """How many of ``connections`` the peer closed (within a few seconds each)."""
    closed = 0
    for conn in connections:
        conn.settimeout(5)
        with contextlib.suppress(OSError):  # (a reset: closed too, but not as asked)
            closed += conn.recv(1) == b""
    return closed


def _keepalive_round(port: int, connections: list[socket.socket]) -> list[bytes]:
    if not connections:
        for _ in range(CLIENTS):
            conn = socket.create_connection(("127.0.0.1", port), timeout=10)
            connections.append(conn)
    answers = []
    for conn in connections:
        try:
            answers.append(_exchange(conn))
        except OSError as err:  # a reset: as failed as no answer
            answers.append(repr(err).encode())
    return answers


NEEDS_26 = pytest.mark.skipif(
    (binary_version(managed_config(Path("/tmp"))) or (0, 0, 0)) < IDLE_CLOSE_SINCE,
    reason="needs HAProxy 2.6",
)


async def _across_a_reload(controller: HAProxyController, port: int, b1) -> None:
    """Kept-alive clients, idle while a reload happens; then each sends its next request."""
    await serves(port, {"b1"})
    connections: list[socket.socket] = []
    try:
        first = await asyncio.to_thread(_keepalive_round, port, connections)
        assert all(_ok(answer) for answer in first), first
        assert not any(b"connection: close" in answer.lower() for answer in first), first
        # A new frontend: structure, so a reload; the kept connections are now idle on
        # the old worker, which soft-stops.
        other = service("other", [server("127.0.0.1", b1.port, "b1")], port=free_port())
        result = await controller.apply([web(port, [b1]), other], "t")
        assert result.reload is ApplyOutcome.DONE and result.error is None
        await asyncio.sleep(0.5)  # (the old worker's soft stop has closed what it closes)
        after = await asyncio.to_thread(_keepalive_round, port, connections)
        closed = await asyncio.to_thread(_closed_by_peer, connections)
    finally:
        for conn in connections:
            conn.close()
    failed = [answer for answer in after if not _ok(answer)]
    assert not failed, f"{len(failed)} of {CLIENTS} kept-alive requests failed: {failed[:2]}"
    assert closed == CLIENTS, "the old worker closes each connection after that answer"


@NEEDS_26
async def test_a_reload_answers_the_next_request_of_every_idle_kept_alive_connection(
    managed_factory, http_backend_factory
):
    b1 = http_backend_factory("b1")
    port = free_port()
    controller = managed_factory(restart_interval=0.0)
    await controller.apply([web(port, [b1])], "t")
    await _across_a_reload(controller, port, b1)


@NEEDS_26
async def test_the_airbnb_way_too(haproxy_factory, http_backend_factory, sockdir):
    """HAProxy its own unit (examples/systemd): synapse reads the running HAProxy's version
    on its runtime socket (not `haproxy -v` of some binary) and adds the option too."""
    b1 = http_backend_factory("b1")
    port = free_port()
    admin = sockdir / "admin.sock"
    config = haproxy_config(
        config_file_path=str(sockdir / "haproxy.cfg"),
        socket_file_path=str(admin),
        reload_command=f"echo reload | socat -t5 stdio unix-connect:{sockdir}/master.sock",
        restart_interval=0.0,
        **{"global": ["maxconn 256", "hard-stop-after 5s",
                      f"stats socket {admin} mode 600 level admin expose-fd listeners"]},
    )  # fmt: skip
    # What an older synapse wrote (without the option), and HAProxy runs it.
    Path(config.config_file_path).write_text(Renderer(config).render([web(port, [b1])]).text)
    haproxy_factory(config_path=Path(config.config_file_path), workdir=sockdir)
    controller = HAProxyController(config, CollectorRegistry())
    await controller.start()
    try:
        first = await controller.apply([web(port, [b1])], "synapse restarted")
        assert first.reload is ApplyOutcome.DONE and first.error is None  # (it adds the option)
        text = Path(config.config_file_path).read_text()
        assert "option idle-close-on-response" in section(text, "frontend web")
        await _across_a_reload(controller, port, b1)
    finally:
        await controller.stop()
