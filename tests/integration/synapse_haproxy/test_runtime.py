"""The asyncio socket client against the runtime API and master CLI of HAProxy 2.6."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest
from haproxy_helpers import eventually

from synapse.haproxy.answers import (
    parse_servers_state,
)
from synapse.haproxy.ops import AddServer, DelServer, SetAddr, SetState, SetWeight
from synapse.haproxy.runtime import SKIPPED, MasterClient, RuntimeClient
from synapse.haproxy.slow_socket import is_slow
from synapse.haproxy.sockets import (
    CommandFailed,
    Session,
    SocketUnavailable,
    unix_request,
)


async def test_missing_socket_is_unavailable(tmp_path: Path):
    with pytest.raises(SocketUnavailable, match="No such file"):
        await RuntimeClient(str(tmp_path / "none.sock")).info()
    with pytest.raises(ValueError):
        await unix_request(str(tmp_path / "none.sock"), "show info\nshow stat")


BACKEND = """
frontend web
    bind 127.0.0.1:{port}
    default_backend web
defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s
backend web
    balance roundrobin
    server a 127.0.0.1:1 id 4 weight 2
backend empty
    balance static-rr
"""


async def test_against_real_haproxy(haproxy_factory):
    from testbed.process import free_port

    proc = haproxy_factory(BACKEND.format(port=free_port()))
    client = RuntimeClient(str(proc.admin_socket))
    assert (await client.version())[:2] >= (2, 4)
    running = await client.running_backends()
    assert set(running) == {"web", "empty"} and running["empty"] == {}
    server = running["web"]["a"]
    assert (server.id, server.port, server.weight) == (4, 1, 2)

    await client.run(AddServer("web", "b", "127.0.0.1:2", "id 9 weight 3"))
    await client.run(SetState("web", "b", "ready"))
    await client.run(SetWeight("web", "a", 5))
    await client.run(SetAddr("web", "a", "127.0.0.2", 3))
    await client.run(SetState("web", "a", "maint"))
    await client.run(DelServer("web", "a"))
    after = (await client.running_backends())["web"]
    assert set(after) == {"b"} and after["b"].id == 9 and after["b"].weight == 3
    assert not after["b"].in_maint

    with pytest.raises(CommandFailed, match="dynamic load balancing"):
        await client.run(AddServer("empty", "x", "127.0.0.1:4"))
    with pytest.raises(CommandFailed, match="No such server"):
        await client.run(SetState("web", "nope", "ready"))
    with pytest.raises(CommandFailed, match="maintenance"):
        await client.run(DelServer("web", "b"))  # still serving: refused

    master = MasterClient(str(proc.master_socket))
    before = await master.show_proc()
    assert before.workers == tuple(proc.worker_pids())
    assert await master.reload() == ""  # 2.6 answers nothing

    async def new_worker() -> bool:
        try:
            now = await master.show_proc()
        except SocketUnavailable:  # the master re-executes itself
            return False
        return bool(now.workers) and not set(now.workers) & set(before.workers)

    await eventually(new_worker, "a new worker after `reload`")
    assert (await master.show_proc()).reloads == before.reloads + 1


async def test_a_batch_attributes_every_answer_to_its_command(haproxy_factory):
    """HAProxy 2.6 in `;` mode runs answers together (`del server` of an unknown server
    answers without a newline); interactive mode ends each answer with a prompt."""
    from testbed.process import free_port

    proc = haproxy_factory(BACKEND.format(port=free_port()))
    client = RuntimeClient(str(proc.admin_socket))
    async with client.session() as session:
        answers = await session.ask(
            ["del server web/nope", "set server web/a state maint", "enable health web/a",
             "show servers state empty", "set weight web/a 3"]
        )  # fmt: skip
        assert answers[0].strip() == "No such server."
        assert answers[1] == ""
        assert "Health check was not configured" in answers[2]
        assert answers[3].startswith("1\n#") and parse_servers_state(answers[3]) == []
        assert answers[4] == ""
        many = await session.ask([f"set weight web/a {i % 5 + 1}" for i in range(1000)])
        assert many == [""] * 1000  # one connection, every answer in its place

    # Waves: a server whose op failed gets none of its later ops; other servers go on.
    ops = [
        AddServer("web", "a", "127.0.0.1:9"),  # exists already: fails
        SetState("web", "a", "ready"),  # ...so this one is not sent
        AddServer("web", "b", "127.0.0.1:2"),
        SetState("web", "b", "ready"),
    ]
    results = await client.run_ops(ops)
    assert "Already exists" in (results[0] or "")
    assert results[1] == SKIPPED and results[2] is None and results[3] is None
    state = await client.running_backends()
    assert state["web"]["a"].forced_maint and not state["web"]["b"].in_maint
    pid, found = await client.read_state(["web", "nope"])
    assert pid is not None and set(found["web"] or {}) == {"a", "b"} and found["nope"] is None

    # A swap whose new server cannot be added: the old one is not taken away either.
    swap = [
        AddServer("web", "b", "127.0.0.1:3"),  # exists already: fails
        SetState("web", "b", "ready"),  # not sent
        SetState("web", "a", "maint"),  # would leave web with nothing: not sent
    ]
    results = await client.run_ops(swap)
    assert "Already exists" in (results[0] or "") and results[1:] == [SKIPPED, SKIPPED]
    state = await client.running_backends()
    assert not state["web"]["b"].in_maint


async def test_a_kept_connection_closed_by_haproxy_is_opened_again(haproxy_factory):
    """HAProxy closes an idle CLI connection (`stats timeout`): the next read on the kept
    connection gets no answer and is sent again on a fresh one."""
    from testbed.process import free_port

    haproxy = haproxy_factory(BACKEND.format(port=free_port()))
    client = RuntimeClient(str(haproxy.admin_socket), keep_idle=30.0)
    async with client.held():
        pid, _ = await client.read_state([])
        async with client.session() as session:  # this connection's idle timeout: 1 s
            assert await session.ask(["set timeout cli 1"]) == [""]
    assert client.connections == 1
    await asyncio.sleep(1.5)
    async with client.held():
        again, _ = await client.read_state([])
    assert again == pid and client.connections == 2
    async with client.held():  # kept open again since
        await client.read_state([])
    assert client.connections == 2
    await client.release()


async def test_a_batch_without_an_answer_ends_at_the_timeout_and_the_session_closes(
    tmp_path: Path,
):
    """A socket that takes the batch and never answers (a hung HAProxy): the batch ends
    once the timeout passed (the first one, without even the answer to `prompt`:
    SocketUnavailable), and the session is not used again (a late answer would be taken
    for the next batch's); the connection is closed."""
    got: list[bytes] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        got.append(await reader.readline())  # takes the batch, answers nothing
        got.append(await reader.read())  # until the client closes the connection

    path = str(tmp_path / "silent.sock")
    server = await asyncio.start_unix_server(silent, path)
    try:
        loop = asyncio.get_running_loop()
        async with Session(path, timeout=0.3) as session:
            began = loop.time()
            with pytest.raises(SocketUnavailable, match="no answer to 'prompt'"):
                await session.ask(["show info"])
            assert 0.25 <= loop.time() - began < 5.0 and session.closed and session.timed_out

        async def closed() -> bool:
            return len(got) == 2

        await eventually(closed, "the connection closed")
        assert got == [b"prompt\n", b"show info\n"]
    finally:
        server.close()


async def test_a_connection_the_timer_aborted_as_the_last_answer_came_is_not_kept(
    tmp_path: Path,
):
    """The timeout's abort falling due in the loop turn that brought the last answer: the
    batch's answers are complete, but the connection is dead, so the session closes
    rather than being kept (the next batch on it would get no answers: every op a
    spurious 'connection lost')."""

    async def answering(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            writer.write(b"\n> " if line.strip() == b"prompt" else b"ok\n\n> ")
            await writer.drain()

    path = str(tmp_path / "answering.sock")
    server = await asyncio.start_unix_server(answering, path)
    try:
        async with Session(path, timeout=5.0) as session:
            assert await session.ask(["show info"]) == ["ok\n"]
            assert session._reader is not None and session._writer is not None
            real_read, transport = session._reader.read, session._writer.transport

            async def read_then_the_timer_fires(n: int = -1) -> bytes:
                data = await real_read(n)
                transport.abort()  # what the due timer does before this task resumes
                return data

            session._reader.read = read_then_the_timer_fires  # type: ignore[method-assign]
            assert await session.ask(["show info"]) == ["ok\n"]
            assert session.closed
    finally:
        server.close()


async def test_an_answer_that_keeps_arriving_is_not_cut_at_the_timeout(tmp_path: Path):
    """A large `show servers state` from a HAProxy held to ~1 % of a CPU arrives over
    longer than the timeout (20,000 servers: 9-13 s at 0.6 %): cut at the timeout, it was
    taken for a dead socket (a reload of the loaded HAProxy). The timeout bounds a silence;
    a silence still ends the batch."""

    async def dribbling(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()  # prompt
        await reader.readline()  # the command
        writer.write(b"\n> ")
        for _ in range(12):  # 1.2 s of answer, a chunk every 0.1 s
            writer.write(b"x" * 1000 + b"\n")
            await writer.drain()
            await asyncio.sleep(0.1)
        writer.write(b"\n> ")
        await writer.drain()
        await reader.read()  # (then silent until the client closes)

    path = str(tmp_path / "dribbling.sock")
    server = await asyncio.start_unix_server(dribbling, path)
    try:
        async with Session(path, timeout=0.4) as session:
            [answer] = await session.ask(["show servers state"])
            assert len(answer) == 12 * 1001 and not session.closed
            loop = asyncio.get_running_loop()
            began = loop.time()
            assert await session.ask(["show info"]) == []  # silent now: cut at the timeout
            assert 0.35 <= loop.time() - began < 1.5 and session.closed
    finally:
        server.close()


async def test_a_one_shot_answer_that_keeps_arriving_is_not_cut_either(tmp_path: Path):
    """unix_request (the state dumper's `show servers state`, `show proc`): likewise."""

    async def dribbling(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        await asyncio.sleep(0.3)  # (a first chunk late in the period re-arms the timer too)
        for _ in range(12):
            writer.write(b"x" * 1000 + b"\n")
            await writer.drain()
            await asyncio.sleep(0.1)
        writer.close()

    path = str(tmp_path / "dribbling-once.sock")
    server = await asyncio.start_unix_server(dribbling, path)
    try:
        assert len(await unix_request(path, "show servers state", timeout=0.4)) == 12 * 1001
    finally:
        server.close()


async def test_a_full_listen_queue_is_a_stalled_socket_not_a_gone_one(tmp_path: Path):
    """A stalled HAProxy accepts nothing: connections queue until its listen queue is full
    (synapse's own retries fill it). Then a connect fails with EAGAIN: slow (no reload), not
    gone; before, asyncio reported the connection made and its first write failed ("no
    answer to 'prompt'" at once: gone, a reload within the 60 s hold, review s25 cr2)."""
    path = str(tmp_path / "stalled.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)  # (never accepts)
    queued = []
    try:
        with pytest.raises(SocketUnavailable) as caught:
            for _ in range(16):  # (the queue holds backlog + 1)
                queued.append(await asyncio.wait_for(Session(path, 0.5).__aenter__(), 2))
        assert is_slow(caught.value, 0.0, 5.0), caught.value.__cause__
        assert len(queued) >= 1
    finally:
        for session in queued:
            await session.close()
        listener.close()
