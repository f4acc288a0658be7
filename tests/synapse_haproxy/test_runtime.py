"""The asyncio socket client: parsers (pure), and the runtime API and master CLI of HAProxy 2.6."""

from __future__ import annotations

from pathlib import Path

import pytest
from haproxy_helpers import eventually

from synapse.haproxy.answers import (
    parse_servers_state,
    parse_show_backend,
    parse_show_proc,
    parse_version,
)
from synapse.haproxy.ops import AddServer, DelServer, SetAddr, SetState, SetWeight
from synapse.haproxy.runtime import SKIPPED, MasterClient, RuntimeClient
from synapse.haproxy.sockets import (
    CommandFailed,
    SocketUnavailable,
    UnexpectedAnswer,
    split_answers,
    unix_request,
)

STATE = """1
# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port
3 web 5 a 127.0.0.1 2 0 1 1 0 1 0 2 0 0 0 1 - 19001 - 0 0 - - 0
3 web 7 1 127.0.0.1 0 5 3 3 0 1 0 0 8 0 0 1 - 19002 - 0 0 - - 0
"""  # noqa: E501

PROC = """#<PID>          <type>          <reloads>       <uptime>        <version>
11813           master          2 [failed: 1]   0d00h02m54s     2.6.12-1+deb12u4
# workers
12470           worker          1               0d00h02m39s     2.6.12-1+deb12u4
# old workers
12001           worker          2               0d00h03m00s     2.6.12-1+deb12u4
# programs
"""


def test_parse_servers_state():
    a, b = parse_servers_state(STATE)
    assert (a.backend, a.name, a.id, a.addr, a.port, a.weight) == (
        "web",
        "a",
        5,
        "127.0.0.1",
        19001,
        1,
    )
    assert not a.in_maint and a.label == "UP"
    assert b.name == "1"  # a numeric server name stays a name
    assert b.forced_maint and b.in_maint and b.label == "MAINT" and b.weight == 3
    with pytest.raises(UnexpectedAnswer):
        parse_servers_state("Unknown command.\n")


def test_parse_show_proc_backend_and_version():
    proc = parse_show_proc(PROC)
    assert (proc.master_pid, proc.reloads, proc.failed_reloads) == (11813, 2, 1)
    assert proc.workers == (12470,) and proc.old_workers == (12001,)
    assert parse_show_backend("# name\nweb\nstats\n\n") == ["web", "stats"]
    assert parse_version("2.6.12-1+deb12u4") == (2, 6, 12)
    with pytest.raises(UnexpectedAnswer):
        parse_version("dev")


def test_op_answers():
    assert SetState("b", "s", "maint").succeeded("\n")
    assert not SetState("b", "s", "maint").succeeded("No such server.\n\n")
    assert AddServer("b", "s", "1.2.3.4:80").succeeded("New server registered.\n\n")
    assert not AddServer("b", "s", "1.2.3.4:80").succeeded("'cookie' option is not accepted\n")
    assert SetAddr("b", "s", "1.2.3.4", 80).succeeded("IP changed from 'a' to 'b' by 'x'\n")
    assert DelServer("b", "s").succeeded("Server deleted.\n")
    assert SetWeight("b", "s", 3).command == "set weight b/s 3"


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
    from smartstack.localservers.process import free_port

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


# --------------------------------------------------------------------------- batches


def test_split_answers_cuts_at_each_prompt_and_keeps_the_unfinished_rest():
    stream = b"\n> No such server.\n\n> \n> 1\n# be_id\n3 web 4 a\n\n> partial"
    answers, used = split_answers(stream, 10)
    assert answers == ["", "No such server.\n", "", "1\n# be_id\n3 web 4 a\n"]
    assert stream[used:] == b"partial"
    assert split_answers(stream, 2) == (
        ["", "No such server.\n"],
        len(b"\n> No such server.\n\n> "),
    )
    # scan_from: the first bytes were searched already; an answer still starts at 0.
    assert split_answers(b"abc\n> ", 1, scan_from=2) == (["abc"], 6)
    assert split_answers(b"no prompt yet", 3) == ([], 0)


async def test_a_batch_attributes_every_answer_to_its_command(haproxy_factory):
    """HAProxy 2.6 in `;` mode runs answers together (`del server` of an unknown server
    answers without a newline); interactive mode ends each answer with a prompt."""
    from smartstack.localservers.process import free_port

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
