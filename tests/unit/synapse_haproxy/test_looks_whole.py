"""A zone-health look at many backends is one whole `show servers state`, not one command per
backend (synapse.haproxy.looks WHOLE_FROM, RuntimeClient.read_labels, parse_labels_of): a
real RuntimeClient over a scripted transport (no HAProxy, no socket)."""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any, cast

import pytest

from synapse import zone_health
from synapse.haproxy import answers
from synapse.haproxy import looks as looks_mod
from synapse.haproxy.answers import CANNOT_FIND_BACKEND, SERVER_STATE_COLUMNS
from synapse.haproxy.looks import Looks
from synapse.haproxy.runtime import RuntimeClient
from synapse.haproxy.sockets import UnexpectedAnswer
from synapse.zone_apply import ZoneRouter

HEAD = "1\n# " + " ".join(SERVER_STATE_COLUMNS) + "\n"
SERVERS = ("az1-0", "az1-1", "az2-0", "az2-1")


def row(be_id: int, backend: str, sid: int, server: str, op_state: int) -> str:
    """A format-1 row of 25 columns (srv_op_state 2: running, 0: stopped)."""
    return (f"{be_id} {backend} {sid} {server} 127.0.0.1 {op_state} 0 1 1 5 6 3 4 6 0 0 0 - "
            f"{8000 + sid} - 0 0 - - 0")  # fmt: skip


class Transport:
    """HAProxy's answers to a look's commands, from ``backends`` (backend -> {server: op});
    every batch of commands sent is kept in ``asked``."""

    def __init__(self, backends: dict[str, dict[str, int]]) -> None:
        self.backends = backends
        self.asked: list[list[str]] = []

    def rows(self, names: Sequence[str]) -> str:
        ids = {name: i for i, name in enumerate(self.backends, 1)}
        return "".join(
            row(ids[b], b, sid, server, op) + "\n"
            for b in names
            for sid, (server, op) in enumerate(self.backends[b].items(), 1)
        )

    async def ask(self, commands: Sequence[str]) -> list[str]:
        self.asked.append(list(commands))
        return [self.answer(command) for command in commands]

    def answer(self, command: str) -> str:
        if command == "show backend":
            return "# name\n" + "".join(f"{b}\n" for b in self.backends)
        if command == "show servers state":
            return HEAD + self.rows(list(self.backends))
        backend = command.removeprefix("show servers state ")
        if backend not in self.backends:
            return f"{CANNOT_FIND_BACKEND}.\n"
        return HEAD + self.rows([backend])


def fleet(count: int) -> dict[str, dict[str, int]]:
    """``count`` services with az1 evacuated (weight 0) and az2 their backups: az2 is dead
    (DOWN in HAProxy) behind every tenth."""
    return {
        f"svc{i}": {s: 0 if i % 10 == 0 and s.startswith("az2") else 2 for s in SERVERS}
        for i in range(count)
    }


def looks_over(transport: Transport) -> Looks:
    known = {b: dict.fromkeys(servers) for b, servers in transport.backends.items()}
    view = SimpleNamespace(counter=0, unread=set(), backends=known)
    looks = Looks([RuntimeClient("/nonexistent")], cast(Any, view), lambda error: None)
    assert looks.client is not None
    looks.client._ask_reads = transport.ask  # type: ignore[method-assign]
    return looks


async def test_a_look_at_many_stranded_services_is_one_whole_dump() -> None:
    """1,000 stranded services were 1,000 `show servers state <backend>` a look: HAProxy
    answered each (7 ms a look), synapse read each (9 ms), and a look came every ~0.6 s, not
    FAST_S (review s39). One `show servers state` of every backend answers them all."""
    transport = Transport(fleet(200))
    names = list(transport.backends)
    looks = looks_over(transport)
    router = SimpleNamespace(watched=lambda local=True: {n: n for n in names},
                             decisions=dict.fromkeys(names), down={})  # fmt: skip
    applier = SimpleNamespace(servers_of=looks.servers_of)
    changed = await zone_health.look(cast(ZoneRouter, router), cast(Any, applier))
    assert transport.asked == [["show backend", "show servers state"]], "one round trip, 2 answers"
    dead = [n for i, n in enumerate(names) if i % 10 == 0]
    assert changed == dead
    assert router.down == dict.fromkeys(dead, frozenset({"az2-0", "az2-1"}))
    await zone_health.look(cast(ZoneRouter, router), cast(Any, applier))
    assert len(transport.asked) == 2 and len(transport.asked[1]) == 2, "every look: one dump"


async def test_a_few_backends_ask_for_themselves() -> None:
    """A whole dump for a few backends of many would cost HAProxy and synapse every row."""
    transport = Transport(fleet(200))
    looks = looks_over(transport)
    few = [f"svc{i}" for i in range(looks_mod.WHOLE_FROM - 1)]
    found = await looks.servers_of(few)
    assert transport.asked == [[f"show servers state {b}" for b in sorted(few)]]
    assert found["svc0"] == {"az1-0": "UP", "az1-1": "UP", "az2-0": "DOWN", "az2-1": "DOWN"}
    many = [f"svc{i}" for i in range(looks_mod.WHOLE_FROM * 2)]  # a small share of all rows
    await looks.servers_of(many)
    assert len(transport.asked[1]) == len(many)


def test_the_whole_dump_tells_an_empty_backend_from_a_missing_one() -> None:
    transport = Transport({"web": {"a": 2, "b": 0}, "empty": {}, "other": {"c": 2}})
    names, state = transport.answer("show backend"), transport.answer("show servers state")
    found = answers.parse_labels_of(names, state, ["web", "empty", "gone"])
    assert found == {"web": {"a": "UP", "b": "DOWN"}, "empty": {}, "gone": None}
    bad = transport.answer("show servers state") + "7 web x\n"
    with pytest.raises(UnexpectedAnswer, match="bad servers state line"):
        answers.parse_labels_of("web\n", bad, ["web"])
    with pytest.raises(UnexpectedAnswer, match="format-1"):
        answers.parse_labels_of("web\n", "Unknown command.\n", ["web"])
