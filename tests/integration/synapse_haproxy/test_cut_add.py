"""A synapse stopped between the round trips of adding a server, against a real HAProxy 2.6.

A new server comes in three batches: `add server` (in maint, its checks configured but
disabled), `enable health`, `state ready`. A SIGTERM (its cancel of the apply), a kill or
a failed `enable health` after the first left it in maint with its checks off; the next
synapse's plan saw a server back from maint and sent `state ready` alone: the server took
traffic unchecked for good (measured: still UP 3 s after its backend died, 6 check
intervals). The planner now reads the check state and sends `enable health` first.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path

from haproxy_helpers import eventually, read_back, serves, web

from synapse.contract import ApplyOutcome
from synapse.haproxy import runtime
from testbed.process import free_port

OPTIONS = "check inter 200ms fall 2 rise 2"


def _kill_all(sockdir: Path) -> None:
    """No HAProxy of this test outlives it, even when it failed between the controllers."""
    config = str(sockdir / "haproxy.cfg").encode()
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if entry.name.isdigit() and config in (entry / "cmdline").read_bytes().split(b"\0"):
                os.kill(int(entry.name), signal.SIGKILL)


async def test_a_server_whose_add_was_cut_gets_its_checks_from_the_next_synapse(
    managed_factory, http_backend_factory, sockdir, monkeypatch
):
    b1, b2 = http_backend_factory("b1"), http_backend_factory("b2")
    port = free_port()
    try:
        first = managed_factory(managed={"stats": {"enabled": False}, "stop_on_exit": False})
        await first.start()
        result = await first.apply([web(port, [b1], server_options=OPTIONS)], "first")
        assert result.reload is ApplyOutcome.DONE
        await read_back(first)
        ask = runtime.Session.ask

        async def cut(self, commands):  # SIGTERM's cancel once the `add server` is answered
            answers = await ask(self, commands)
            if any(command.startswith("add server") for command in commands):
                raise asyncio.CancelledError
            return answers

        monkeypatch.setattr(runtime.Session, "ask", cut)
        with contextlib.suppress(asyncio.CancelledError):
            await first.apply([web(port, [b1, b2], server_options=OPTIONS)], "b2 came")
        monkeypatch.undo()
        await first.stop()  # (HAProxy keeps serving for the next synapse)
        client = runtime.RuntimeClient(str(sockdir / "haproxy.sock"))

        async def b2_state() -> dict[str, str]:  # (its row as HAProxy prints it)
            header, *rows = (await client.execute("show servers state web")).splitlines()[1:]
            columns = header.lstrip("# ").split()
            found = [dict(zip(columns, row.split(), strict=True)) for row in rows if row]
            return next(row for row in found if row["srv_name"].startswith("b2_"))

        cut_short = await b2_state()  # (the cut happened: in maint, checks off)
        assert (cut_short["srv_admin_state"], cut_short["srv_check_state"]) == ("1", "2")

        second = managed_factory()
        await second.start()
        result = await second.apply([web(port, [b1, b2], server_options=OPTIONS)], "restart")
        target = f"web/{cut_short['srv_name']}"
        assert result.reload is ApplyOutcome.NONE, result  # (adopted, no reload)
        assert result.ops == (f"enable health {target}", f"set server {target} state ready")
        await serves(port, {"b1", "b2"})
        b2.stop()

        async def b2_down() -> bool:  # (srv_op_state 0: stopped; its checks on)
            state = await b2_state()
            return (state["srv_op_state"], state["srv_check_state"]) == ("0", "6")

        await eventually(b2_down, "b2 marked DOWN by its checks once its backend died")
        await serves(port, {"b1"})
    finally:
        _kill_all(sockdir)
