"""The server-state file kept by partial dumps (real HAProxy, managed): after synapse's
runtime commands and an operator's, it says what a whole `show servers state` says, and
a HAProxy started from it takes the states back."""

from __future__ import annotations

from haproxy_helpers import eventually, server, serves, service, web

from synapse.contract import ApplyOutcome
from synapse.haproxy import statedump
from synapse.haproxy.runtime import RuntimeClient
from synapse.haproxy.statedump import comparable
from testbed.process import free_port


def others(count: int, port: int, without: int = -1) -> list:
    return [
        service(
            f"s{i}",
            [server("127.0.0.1", port, f"o{i}")]
            + ([] if i == without else [server("127.0.0.1", port + 1, f"p{i}")]),
            backend_only=True,
        )
        for i in range(count)
    ]


async def test_partial_dumps_write_what_a_whole_dump_would(
    managed_factory, http_backend_factory, monkeypatch
):
    monkeypatch.setattr(statedump, "ROTATION", 4)
    b1, b2 = http_backend_factory("b1"), http_backend_factory("b2")
    port = free_port()
    controller = managed_factory()
    empty = service("empty", [], backend_only=True)
    first = await controller.apply([web(port, [b1]), empty, *others(30, 9000)], "t")
    assert first.reload is ApplyOutcome.DONE
    dumper = controller._dumper
    assert dumper is not None
    await dumper.stop()  # its rounds run here, one by one
    admin = RuntimeClient(dumper.runtime.path)

    async def swept() -> bool:  # (a round waits for the sweep after the start: ``deferred``)
        return not controller._reader.unread

    await eventually(swept, "the sweep after the start")
    await dumper.dump()
    assert dumper.whole_dumps == 1
    state_file = dumper.path
    assert comparable(state_file.read_text()) == comparable(
        await admin.execute("show servers state")
    )

    # synapse's runtime commands: a server added, one removed (kept in maintenance), the
    # first server of a backend that had none
    filled = service("empty", [server("127.0.0.1", 9500, "e")], backend_only=True)
    changed = await controller.apply([web(port, [b1, b2]), filled, *others(30, 9000, 3)], "t")
    assert changed.reload is ApplyOutcome.NONE and changed.ops
    # an operator's command: synapse is not told, the rotation finds it
    rows = (await admin.execute("show servers state s9")).splitlines()
    drained = rows[2].split()[3]
    assert (await admin.execute(f"set server s9/{drained} state drain")).strip() == ""
    for _ in range(statedump.ROTATION + 1):
        await dumper.dump()
    assert dumper.whole_dumps == 1 and dumper.writes >= 2
    whole = await admin.execute("show servers state")
    assert comparable(state_file.read_text()) == comparable(whole)
    rows = [row for row in state_file.read_text().splitlines()[2:] if row]
    assert [row.split()[3] for row in rows if row.split()[1] == "empty"] == ["e_127.0.0.1:9500"]

    # HAProxy starts from that file: synapse stopped with its HAProxy, the next one (more
    # than 25 backends: the starting apply does not read and plan them all at once)
    # starts it (the dump before the start finds no HAProxy: the file stays). s9 did not
    # change, so only the background sweep (stopped here) would plan it: the drain that
    # HAProxy shows came from the file.
    desired = [web(port, [b1, b2]), filled, *others(30, 9000, 3)]
    await controller.stop()
    again = managed_factory()
    await again.start()
    await again._reader.stop_sweeping()
    assert (await again.apply(desired, "t")).reload is ApplyOutcome.DONE
    await serves(port, {"b1", "b2"})
    rows = [row for row in (await admin.execute("show servers state s9")).splitlines()[2:] if row]
    admin_state = {row.split()[3]: int(row.split()[6]) for row in rows}
    assert admin_state[drained] & 0x08, rows  # SRV_ADMF_FDRAIN
