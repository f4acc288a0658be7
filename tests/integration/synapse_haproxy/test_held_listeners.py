"""synapse holds its HAProxy's listening sockets (synapse.haproxy.listeners), real HAProxy 2.6:
a connection made while HAProxy is dead waits for the restarted one instead of being refused."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time

import pytest
from haproxy_helpers import eventually, serves, web

from testbed.process import free_port, process_gone


def _wait_gone(pid: int, timeout: float = 5.0) -> None:
    """Block (the test's loop too: synapse cannot restart HAProxy meanwhile) until ``pid``
    has exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process_gone(pid):  # (a zombie whose threads are all gone holds no sockets)
            return
        time.sleep(0.005)
    raise AssertionError(f"HAProxy {pid} did not exit")


def _get(sock: socket.socket) -> bytes:
    sock.settimeout(10)
    sock.sendall(b"GET / HTTP/1.0\r\nHost: web\r\n\r\n")
    answer = b""
    while chunk := sock.recv(4096):
        answer += chunk
    sock.close()
    return answer


def _kill_haproxy(controller) -> None:
    """HAProxy's process group killed -9, until its master and worker are gone."""
    pids = controller.status()["haproxy_pids"]
    os.killpg(pids["master"], signal.SIGKILL)
    _wait_gone(pids["master"])
    _wait_gone(pids["worker"])


async def test_a_connection_made_while_haproxy_is_dead_is_served_by_the_next(
    managed_factory, http_backend_factory
):
    b1 = http_backend_factory("b1")
    port = free_port()
    controller = managed_factory(restart_interval=0.1)
    await controller.apply([web(port, [b1])], "t")
    await serves(port, {"b1"})
    assert controller._managed.listeners.addresses == [("127.0.0.1", port)]
    _kill_haproxy(controller)
    # HAProxy is gone and synapse has not run since: the kernel completes the connection
    # into the socket synapse holds.
    sock = socket.create_connection(("127.0.0.1", port), timeout=2)
    answer = await asyncio.to_thread(_get, sock)
    assert answer.startswith(b"HTTP/1.") and b" 200 " in answer.split(b"\r\n")[0]
    assert b"b1" in answer

    async def restarted() -> bool:
        return controller.info.starts == 2

    await eventually(restarted, "the restart to be complete")
    assert controller._managed.listeners.addresses == [("127.0.0.1", port)]


async def test_without_hold_listeners_the_same_connection_is_refused(
    managed_factory, http_backend_factory
):
    """The control for the test above: the difference is synapse's copy."""
    b1 = http_backend_factory("b1")
    port = free_port()
    controller = managed_factory(
        restart_interval=0.1,
        managed={"stats": {"enabled": False}, "stop_on_exit": True, "hold_listeners": False},
    )
    await controller.apply([web(port, [b1])], "t")
    await serves(port, {"b1"})
    assert controller._managed.listeners is None
    _kill_haproxy(controller)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2)
    await serves(port, {"b1"})  # (restarted)


async def test_a_port_the_new_config_drops_is_refused_not_held(
    managed_factory, http_backend_factory
):
    b1 = http_backend_factory("b1")
    kept, dropped = free_port(), free_port()
    controller = managed_factory()
    other = web(dropped, [b1])
    other = type(other)("other", other.config, other.servers)
    await controller.apply([web(kept, [b1]), other], "t")
    await serves(dropped, {"b1"})
    held = controller._managed.listeners
    assert held.addresses == sorted([("127.0.0.1", kept), ("127.0.0.1", dropped)])
    await controller.apply([web(kept, [b1])], "t")  # a reload: "other" is gone

    async def refused() -> bool:
        try:
            socket.create_connection(("127.0.0.1", dropped), timeout=1).close()
        except ConnectionRefusedError:
            return True
        return False

    await eventually(refused, f"port {dropped} to refuse connections")
    assert held.addresses == [("127.0.0.1", kept)]
    await serves(kept, {"b1"})


async def test_an_operator_admin_socket_without_expose_fd_still_holds_them(
    managed_factory, http_backend_factory, sockdir, caplog
):
    """The operator's `stats socket` lines are theirs: synapse's own admin socket (first in
    `global`, with `expose-fd listeners`) hands the listeners over all the same."""
    b1 = http_backend_factory("b1")
    port = free_port()
    admin = sockdir / "plain-admin.sock"
    admin_line = f"stats socket {admin} mode 600 level admin"
    controller = managed_factory(**{"global": ["maxconn 256", "hard-stop-after 5s", admin_line]})
    await controller.apply([web(port, [b1])], "t")
    await serves(port, {"b1"})
    assert controller._managed.listeners.addresses == [("127.0.0.1", port)]
    assert not [r for r in caplog.records if r.getMessage() == "haproxy_listeners_not_held"]


async def test_an_operator_socket_at_synapses_own_path_moves_synapses_aside(
    managed_factory, http_backend_factory, sockdir, caplog
):
    """The docs' Airbnb example (``socket_file_path: haproxy-synapse.sock``) beside a master
    socket ``haproxy.sock``: synapse's own socket, named after the master's, had that very
    path; HAProxy kept the later `stats socket` line (capped, no ``expose-fd``) and no
    listener was held (``haproxy_listeners_not_held``). Its own takes another name."""
    b1 = http_backend_factory("b1")
    port = free_port()
    shared = sockdir / "haproxy-synapse.sock"
    controller = managed_factory(
        socket_file_path=[str(shared)],
        managed={"stats": {"enabled": False}, "stop_on_exit": True,
                 "master_socket_path": str(sockdir / "haproxy.sock")},
    )  # fmt: skip
    await controller.apply([web(port, [b1])], "t")
    await serves(port, {"b1"})
    assert controller._managed.listeners.addresses == [("127.0.0.1", port)]
    assert not [r for r in caplog.records if r.getMessage() == "haproxy_listeners_not_held"]
    assert controller.settings.runtime_sockets != (str(shared),)


async def test_a_restarted_synapse_takes_copies_from_the_haproxy_it_adopts(
    managed_factory, http_backend_factory
):
    b1 = http_backend_factory("b1")
    port = free_port()
    first = managed_factory(managed={"stats": {"enabled": False}, "stop_on_exit": False})
    await first.apply([web(port, [b1])], "t")
    await serves(port, {"b1"})
    master = first.status()["haproxy_pids"]["master"]
    await first.stop()  # left running: its copies are closed, HAProxy keeps its own
    assert first._managed.listeners.held == []
    second = managed_factory()  # (stop_on_exit: this one stops it at the end)
    await second.apply([web(port, [b1])], "t")
    assert second.status()["haproxy_pids"]["master"] == master  # adopted, not restarted
    assert second._managed.listeners.addresses == [("127.0.0.1", port)]
    assert second.status()["held_listeners"] == [f"127.0.0.1:{port}"]  # (/status)
    await serves(port, {"b1"})


async def test_more_listeners_than_one_batch_are_handed_to_the_restarted_haproxy(
    managed_factory, http_backend_factory
):
    """300 frontends: two batches of _getsocks both ways; the new HAProxy runs on the very
    sockets synapse held (same inodes), not on new ones."""
    b1 = http_backend_factory("b1")
    ports = [free_port() for _ in range(300)]
    services = []
    for i, port in enumerate(ports):
        one = web(port, [b1])
        services.append(type(one)(f"svc{i}", one.config, one.servers))
    controller = managed_factory(restart_interval=0.1)
    await controller.apply(services, "t")
    held = controller._managed.listeners
    assert len(held.held) == 300
    before = held.inodes()
    pids = controller.status()["haproxy_pids"]
    os.killpg(pids["master"], signal.SIGKILL)

    async def restarted() -> bool:
        return controller.info.starts == 2 and len(held.held) == 300

    await eventually(restarted, "the restart to be complete")
    assert held.inodes() == before
    for port in (ports[0], ports[252], ports[253], ports[-1]):
        await serves(port, {"b1"})


async def test_a_crash_before_the_first_apply_after_adoption_restarts_from_the_file(
    managed_factory, http_backend_factory
):
    """A restarted synapse adopts HAProxy and waits for its registry (startup_wait): no
    apply yet. HAProxy dies meanwhile: it starts again at once from the file it ran, on
    the sockets synapse took at adoption (was: refused until the first apply)."""
    b1 = http_backend_factory("b1")
    port = free_port()
    first = managed_factory(managed={"stats": {"enabled": False}, "stop_on_exit": False})
    await first.apply([web(port, [b1])], "t")
    await serves(port, {"b1"})
    await first.stop()  # left running
    second = managed_factory()
    await second.start()  # adopted; nothing applied yet
    master = second.status()["haproxy_pids"]["master"]
    assert second.status()["held_listeners"] == [f"127.0.0.1:{port}"]
    os.killpg(master, signal.SIGKILL)

    async def restarted() -> bool:
        pids = second.status()["haproxy_pids"]
        return second.info.starts == 1 and pids["master"] not in (None, master)

    await eventually(restarted, "HAProxy started again from its file")
    await serves(port, {"b1"})
    await second.apply([web(port, [b1])], "t")  # the first apply finds it running
    await serves(port, {"b1"})
