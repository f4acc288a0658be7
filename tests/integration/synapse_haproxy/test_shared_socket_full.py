"""Other clients filling the admin socket they share (scrapers, operators: HAProxy serves
10 connections at a time on one, by default) neither stall synapse nor break a reload's
hand-over of the listening sockets (real HAProxy, managed): synapse has an admin socket of
its own, first in `global`, and only that one hands the listeners over."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from haproxy_helpers import read_back, serves, web

from synapse.contract import ApplyOutcome
from synapse.haproxy import runtime
from testbed.process import free_port

HOLDERS = 12  # more than the socket's default maxconn (10)


async def hold(path: Path, stop: asyncio.Event) -> None:
    """One client keeping a prompt-mode connection open (a `show info` every 2 s keeps it
    under `stats timeout`)."""
    reader, writer = await asyncio.open_unix_connection(str(path))
    try:
        writer.write(b"prompt\n")
        while not stop.is_set():
            writer.write(b"show info\n")
            await reader.readuntil(b"\n> ")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 2.0)
    finally:
        writer.close()


def listening_inodes(port: int) -> set[str]:
    """The inodes of the sockets listening on ``port`` (a socket handed over keeps its own;
    a new worker that could not take it binds a new one beside it)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            fields = row.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                found.add(fields[9])
    return found


async def test_a_full_shared_socket_neither_stalls_nor_splits(
    managed_factory, http_backend_factory, monkeypatch
):
    monkeypatch.setattr(runtime, "KEEP_IDLE_S", 0.0)  # (an apply connects: changes minutes apart)
    controller = managed_factory()
    shared = Path(controller.config.config_file_path).with_name("haproxy.sock")  # (others')
    await full_socket_changes(controller, shared, HOLDERS, http_backend_factory)


async def test_the_operators_own_socket_full_neither_stalls_nor_splits(
    managed_factory, http_backend_factory, monkeypatch, sockdir
):
    """The operator's own `stats socket` line with no maxconn (allowed), 30 clients holding
    it: it gets one, and `stats maxconn` leaves room for synapse's socket and the master's
    socket pair, through which a reload hands the listeners over (before: the clients took
    the whole cap; changes 11 s late, a runtime_unavailable reload, the hand-over failed)."""
    monkeypatch.setattr(runtime, "KEEP_IDLE_S", 0.0)
    ops = sockdir / "ops.sock"
    lines = ["maxconn 256", "hard-stop-after 5s", f"stats socket {ops} mode 600 level admin"]
    controller = managed_factory(**{"global": lines})
    await full_socket_changes(controller, ops, 30, http_backend_factory)


async def full_socket_changes(controller, shared: Path, count: int, http_backend_factory) -> None:
    """``count`` clients hold ``shared``: a change goes in at runtime, and a reload hands
    the listening sockets over."""
    b1, b2 = http_backend_factory("b1"), http_backend_factory("b2")
    port = free_port()
    assert (await controller.apply([web(port, [b1])], "t")).reload is ApplyOutcome.DONE
    await read_back(controller)
    stop = asyncio.Event()
    holders = [asyncio.create_task(hold(shared, stop)) for _ in range(count)]
    try:
        await asyncio.sleep(0.5)  # (the first ten connected; the rest wait in the backlog)
        added = await controller.apply([web(port, [b1, b2])], "t")
        assert added.reload is ApplyOutcome.NONE and added.ops and added.error is None, added
        await serves(port, {"b1", "b2"})
        assert controller.info.reloads == 0  # (before: `runtime_unavailable`, a reload)

        before = listening_inodes(port)
        changed = await controller.apply([web(port, [b1, b2], backend=["retries 2"])], "t")
        assert changed.reload in (ApplyOutcome.DONE, ApplyOutcome.PENDING), changed
        await controller.flush()
        assert controller.info.reloads == 1
        await serves(port, {"b1", "b2"})
        assert listening_inodes(port) == before  # handed over, not bound again beside
    finally:
        stop.set()
        for task in holders:
            task.cancel()
        await asyncio.gather(*holders, return_exceptions=True)
