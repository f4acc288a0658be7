"""The running view (pure, with a scripted runtime client): what is read, what is kept,
and which reads win when an apply and the background sweep overlap."""

from __future__ import annotations

import asyncio
from typing import Any
from unittest.mock import ANY

from synapse.haproxy.reader import RunningReader
from synapse.haproxy.running import RunningServer
from synapse.haproxy.view import READ_STEP, Read, RunningIds, RunningView, ServerIds


def srv(backend: str, name: str, sid: int, admin: int = 0) -> RunningServer:
    return RunningServer(backend, name, sid, "10.0.0.1", 80, admin_state=admin)


class ScriptedClient:
    """read_state answers from a dict we change between calls."""

    path, timeout = "/nonexistent", 1.0

    def __init__(self) -> None:
        self.pid = "100"
        self.state: dict[str, dict[str, RunningServer]] = {}
        self.calls: list[list[str] | None] = []
        self.steps: list[int] = []  # read_state's ``step`` per call

    async def read_state(self, backends, with_pid=True, step=0, known=None, pause=None):
        self.calls.append(None if backends is None else list(backends))
        self.steps.append(step)
        if pause is not None:
            await pause()
        names = self.state if backends is None else backends
        found = {b: (dict(self.state[b]) if b in self.state else None) for b in names}
        return (self.pid if with_pid else None), found

    async def backend_names(self):
        self.calls.append("names")  # type: ignore[arg-type]
        return self.pid, sorted(self.state)


def view_of(client: ScriptedClient) -> RunningView:
    return RunningView(client, 30.0, lambda: 0.0)  # type: ignore[arg-type]


async def test_partial_reads_replace_only_what_changed():
    client = ScriptedClient()
    client.state = {"a": {"x": srv("a", "x", 1)}, "b": {"y": srv("b", "y", 2)}}
    view = view_of(client)
    await view.read({"a"})  # not trusted yet: a whole read
    assert client.calls == [None] and view.valid and set(view.backends) == {"a", "b"}
    assert view.take_replaced() == {"a", "b"}
    a, b = view.backends["a"], view.backends["b"]
    await view.read({"a", "b"})  # same content: the same objects stay
    assert view.backends["a"] is a and view.backends["b"] is b and not view.take_replaced()
    client.state["a"] = {"x": srv("a", "x", 1, admin=1)}
    del client.state["b"]
    await view.read({"a", "b"})
    assert view.take_replaced() == {"a", "b"}
    assert view.backends["a"]["x"].forced_maint and "b" not in view.backends


async def test_another_process_answering_means_a_whole_read():
    client = ScriptedClient()
    client.state = {"a": {}}
    view = view_of(client)
    await view.read_all()
    client.pid = "200"  # reloaded behind our back
    client.state = {"a": {}, "new": {"z": srv("new", "z", 1)}}
    await view.read({"a"})
    assert client.calls[-1] is None and view.pid == "200" and "new" in view.backends


async def test_an_apply_read_wins_over_an_older_sweep_part():
    client = ScriptedClient()
    client.state = {"a": {"x": srv("a", "x", 1)}, "b": {}}
    view = view_of(client)
    await view.read_all()
    sweep = await view.read_part(client, ["a", "b"])  # the sweep reads first...
    client.state["a"] = {"x": srv("a", "x", 1), "w": srv("a", "w", 3)}
    await view.read({"a"})  # ...an apply adds a server and reads it again...
    assert view.merge(sweep)  # ...and the sweep's older read of `a` is not taken
    assert set(view.backends["a"]) == {"x", "w"}


async def test_reads_begun_before_an_invalidation_or_from_another_process_are_refused():
    client = ScriptedClient()
    client.state = {"a": {}}
    view = view_of(client)
    await view.read_all()
    sweep = await view.read_part(client, ["a"])
    view.invalidate()  # e.g. a reload happened meanwhile
    assert not view.merge(sweep)
    await view.read_all()
    assert not view.merge(Read("999", view.counter, {"a": {}}))  # another process
    assert not view.valid  # so the next apply reads it all


async def test_a_whole_read_drops_backends_haproxy_no_longer_has():
    client = ScriptedClient()
    client.state = {"a": {}, "b": {}}
    view = view_of(client)
    await view.read_all()
    view.take_replaced()
    del client.state["b"]
    await view.read_all()
    assert set(view.backends) == {"a"} and view.take_replaced() == {"b"}


def test_running_ids_are_reused_while_the_servers_are_the_same_object():
    servers = {"x": srv("a", "x", 4)}
    ids = RunningIds().use({"a": servers})
    first = ids["a"]
    assert first == {"x": 4} and ids["a"] is first
    again = ids.use({"a": dict(servers)})["a"]  # another object (a new read)
    assert again == first and again is not first
    assert ids.get("missing") is None


def test_running_ids_read_through_to_the_servers_and_compare_as_a_dict():
    servers = {"x": srv("a", "x", 4), "y": srv("a", "y", 9)}
    ids = RunningIds().use({"a": servers})["a"]
    assert isinstance(ids, ServerIds) and dict(ids) == {"x": 4, "y": 9}
    assert ids == {"x": 4, "y": 9}
    assert {"y": 9, "x": 4} == ids  # noqa: SIM300 - the dict's side (reflected) on purpose
    for other in ({"x": 4}, {"x": 4, "y": 8}, {"x": 4, "z": 9}, {}, {"x": 4, "y": 9, "z": 1}):
        assert ids != other and other != ids
    assert ids == ServerIds(dict(servers)) and ids != ServerIds({"x": servers["x"]})
    # (its own get, items and `in`: the Mapping mixins' went through __getitem__ per key)
    assert ids.get("y") == 9 and ids.get("z") is None and ids.get("z", 0) == 0
    assert sorted(ids.items()) == [("x", 4), ("y", 9)] and ids.items() == dict(ids).items()
    assert "x" in ids and "z" not in ids and 4 not in ids
    assert RunningIds().use({"a": servers}).get("a") == {"x": 4, "y": 9}


async def test_backends_changed_by_commands_stay_stale_until_a_later_read():
    """The view is trusted between applies; what runtime commands changed is read again
    first (by a read begun after the commands: an older sweep part does not count)."""
    client = ScriptedClient()
    client.state = {"a": {"x": srv("a", "x", 1)}, "b": {}}
    view = view_of(client)
    await view.read_all()
    assert view.stale == set()
    older = await view.read_part(client, ["a"])  # a sweep part, begun before the commands
    view.mark_stale({"a"})
    client.state["a"] = {"x": srv("a", "x", 1), "n": srv("a", "n", 2)}  # what they did
    assert view.merge(older) and view.stale == {"a"}
    assert set(view.backends["a"]) == {"x"}, "the older part does not count as a read"
    await view.read(view.stale)
    assert view.stale == set() and set(view.backends["a"]) == {"x", "n"}
    view.mark_stale({"b"})
    view.invalidate()  # the next read is a whole one: nothing stale on its own
    assert view.stale == set()


async def test_the_reader_reads_nothing_before_planning_a_trusted_view():
    from synapse.haproxy.reader import RunningReader

    client = ScriptedClient()
    client.state = {"a": {"x": srv("a", "x", 1)}}
    reader = RunningReader([client], None, lambda: 0.0)  # type: ignore[list-item]
    reader.version = (2, 6, 0)
    reader.view = view_of(client)
    await reader.read(reader.stale())  # not trusted yet: whole
    assert client.calls == [None]
    running = await reader.read(reader.stale())  # trusted: no round trip at all
    assert client.calls == [None] and running.backends == {"a": {"x": srv("a", "x", 1)}}
    reader.view.mark_stale({"a"})
    await reader.read(reader.stale())  # commands changed "a" and nothing read it since
    assert client.calls == [None, ["a"]] and reader.stale() == set()


async def _read_ab() -> tuple[Any, Any, Any]:
    """A reader whose view has read backends a (server x) and b (server y)."""
    from synapse.haproxy.reader import RunningReader

    client = ScriptedClient()
    client.state = {"a": {"x": srv("a", "x", 1)}, "b": {"y": srv("b", "y", 2)}}
    reader = RunningReader([client], None, lambda: 0.0)  # type: ignore[list-item]
    reader.version = (2, 6, 0)
    reader.view = view = view_of(client)
    await view.read_all()
    return client, reader, view


async def test_after_a_reload_backends_are_known_by_name_and_read_when_planned():
    """After a reload only names are read; a backend is read (and counts as changed, so
    it is planned) when an apply wants it, the rest stay unread until the sweep."""
    client, reader, view = await _read_ab()
    old_a = view.backends["a"]
    view.take_replaced()
    client.pid, client.state["c"] = "200", {"z": srv("c", "z", 3)}  # reloaded: a new backend
    sweep = await view.read_part(client, ["b"])  # begun before the names: refused
    running = await reader.read(reloaded=True)
    assert client.calls[-1] == "names" and view.pid == "200" and view.unread == {"a", "b", "c"}
    assert running.backends == {"a": old_a, "b": view.backends["b"], "c": {}}
    assert reader.ids_changed(running) == {"c"} and not view.merge(sweep)
    reader.rendered()
    running = await reader.read(reader.stale(), {"a", "other"})  # an apply plans `a` only
    assert client.calls[-1] == ["a"] and view.unread == {"b", "c"}
    assert reader.ids_changed(running) == {"a"}, "read since the reload: planned, unchanged"
    assert view.backends["a"] is old_a
    await reader.read(reader.stale(), None)  # an apply that may plan anything: whole
    assert client.calls[-1] is None and not view.unread and view.full_reads == 2


def test_a_plan_needing_a_reload_of_the_reloaded_config_settles_it(caplog):
    from synapse.haproxy.confirm import ReloadCheck
    from synapse.haproxy.reload_gate import ReloadGate

    gate = ReloadGate(1.0, 0.0, lambda: 0.0, lambda: 0.0)
    check = ReloadCheck(gate)
    check.begin(("head", "svc"))
    check.planned(("head", "other"), [("config", "x")], all_read=False)  # another config
    check.planned(("head", "svc"), [("runtime_unavailable", "down")], all_read=False)
    check.planned(("head", "svc"), [("start", "HAProxy is not running")], all_read=False)
    assert gate.settled is None and not caplog.text  # (a crash since: no difference)
    check.planned(("head", "svc"), [("new_server", "cannot add b/s")], all_read=False)
    assert gate.settled == "headsvc" and "haproxy_differs_after_reload" in caplog.text
    check.begin(("head", "svc"))
    assert gate.settled is None
    check.planned(("head", "svc"), [], all_read=True)  # every backend planned: over
    check.planned(("head", "svc"), [("new_server", "later")], all_read=True)
    assert gate.settled is None


async def test_status_shows_unread_backends_as_unread_not_as_the_old_processs_servers():
    """/status right after a reload or start: a backend the sweep has not read yet is
    listed as unread (its service: servers null), never with the servers the previous
    process had; once read, its servers are the new process's."""
    from synapse.haproxy.status import running_backends
    from synapse.status import merge_service_status

    client, reader, _ = await _read_ab()
    assert running_backends(reader) == ({"a": {"x": ANY}, "b": {"y": ANY}}, [])
    # Reloaded: `x` came back from the state file in maintenance, `c` is new.
    client.pid = "200"
    client.state = {**client.state, "a": {"x": srv("a", "x", 1, admin=1)}, "c": {}}
    await reader.read(reloaded=True)
    backends, unread = running_backends(reader)
    assert backends == {} and unread == ["a", "b", "c"]
    services = {"a": {"backend": "a"}, "gone": {"backend": "gone"}}
    merged = merge_service_status(services, {}, {"backends": backends, "unread_backends": unread})
    assert merged["a"]["haproxy"] == {"backend": "a", "servers": None, "unread": True}
    assert merged["gone"]["haproxy"] is None  # HAProxy does not run it
    await reader.read(set(), {"a"})  # an apply (or the sweep) read `a`
    backends, unread = running_backends(reader)
    assert backends == {"a": {"x": {"state": "MAINT", "weight": ANY, "address": "10.0.0.1:80"}}}
    assert unread == ["b", "c"]
    merged = merge_service_status(services, {}, {"backends": backends, "unread_backends": unread})
    assert merged["a"]["haproxy"] == {"backend": "a", "servers": backends["a"], "unread": False}


async def test_a_part_is_asked_in_one_round_trip_and_parsed_a_few_backends_a_turn():
    """A settle read an apply may wait for is one round trip, not one per READ_STEP."""
    client = ScriptedClient()
    names = [f"b{i:02}" for i in range(2 * READ_STEP + 1)]
    client.state = {name: {"x": srv(name, "x", 1)} for name in names}
    view = view_of(client)
    part = await view.read_part(client, reversed(names))
    assert client.calls == [names] and client.steps == [READ_STEP]
    assert part.pid == "100" and sorted(part.backends) == names


async def test_read_state_parses_its_answers_step_backends_per_loop_turn(monkeypatch):
    from synapse.haproxy import runtime

    names = [f"b{i:02}" for i in range(2 * READ_STEP + 1)]
    head = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state\n"
    answers = ["Pid: 100\n", *(f"{head}3 {n} 1 x 10.0.0.1 2 0\n" for n in names)]
    client = runtime.RuntimeClient("/nonexistent")
    asked: list[list[str]] = []

    async def ask_reads(commands):  # (no socket: the unit tier)
        asked.append(list(commands))
        return list(answers)

    turns, parsed_at = 0, []

    def parse(answer, known=None):
        parsed_at.append(turns)
        return [srv(answer.split()[-6], "x", 1)]

    async def ticker():
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    monkeypatch.setattr(client, "_ask_reads", ask_reads)
    monkeypatch.setattr(runtime, "parse_servers_state", parse)
    ticking = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    pid, found = await client.read_state(names, step=READ_STEP)
    ticking.cancel()
    assert len(asked) == 1 and len(asked[0]) == len(names) + 1  # one round trip
    assert pid == "100" and sorted(found) == names
    groups = [parsed_at.count(t) for t in sorted(set(parsed_at))]
    assert groups == [READ_STEP, READ_STEP, 1]  # other tasks ran between the steps


async def test_an_apply_takes_the_settle_read_in_flight_instead_of_asking_again():
    client = ScriptedClient()
    client.state = {"a": {"x": srv("a", "x", 1)}, "b": {"y": srv("b", "y", 2)}}
    reader = RunningReader([client], None, lambda: 0.0)  # type: ignore[list-item]
    view = reader.view
    assert view is not None
    await view.read_all()
    view.mark_stale({"a", "b"})  # an apply's commands changed both...
    client.state["a"] = {"x": srv("a", "x", 1, admin=1)}
    reading = asyncio.create_task(view.read_part(client, ["a"]))  # ...the settle reads `a`
    reader._settling = ({"a"}, reading)
    calls = len(client.calls)
    assert await reader._settled_meanwhile({"a", "b"}) == {"b"}  # `b`: the apply's to read
    assert len(client.calls) == calls + 1  # (the settle's read only)
    assert view.stale == {"b"} and view.backends["a"]["x"].forced_maint
    # Commands again after the settle read began: the apply reads it again.
    reader._settling = ({"a"}, asyncio.create_task(view.read_part(client, ["a"])))
    await asyncio.sleep(0)  # (the read is done)
    view.mark_stale({"a"})
    assert await reader._settled_meanwhile({"a"}) == {"a"}


async def test_a_reread_of_an_unchanged_backend_gives_back_the_views_own_servers(monkeypatch):
    """A read (an apply's, a settle's, a sweep's part) parses against what the view holds:
    unchanged rows are its very objects, so nothing is built and the map is kept."""
    from synapse.haproxy import runtime

    head = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state " \
        "srv_uweight srv_iweight srv_port srv_check_state\n"  # fmt: skip
    rows = {"a": "3 a 1 x 10.0.0.1 2 0 1 1 80 6\n", "b": "4 b 1 y 10.0.0.2 2 0 1 1 80 6\n"}
    client = runtime.RuntimeClient("/nonexistent")

    async def ask_reads(commands):  # (no socket: the unit tier)
        return ["Pid: 100\n", *(head + rows[c.split()[-1]] for c in commands[1:])]

    monkeypatch.setattr(client, "_ask_reads", ask_reads)
    view = RunningView(client, 30.0, lambda: 0.0)
    view.backends = {"a": {}, "b": {}}
    view.valid, view.pid = True, "100"
    await view.read(["a", "b"])
    x, y = view.backends["a"]["x"], view.backends["b"]["y"]
    rows["b"] = "4 b 1 y 10.0.0.2 0 1 1 1 80 6\n"  # `y` went into maintenance
    part = await view.read_part(client, ["a", "b"])
    assert part.backends["a"]["x"] is x and part.backends["b"]["y"] is not y
    assert part.backends["b"]["y"].forced_maint


async def test_read_state_awaits_its_pause_between_parse_steps(monkeypatch):
    from synapse.haproxy import runtime

    names = [f"b{i:02}" for i in range(2 * READ_STEP + 1)]
    answers = ["Pid: 100\n", *(f"1\n3 {n} 1 x 10.0.0.1 2 0\n" for n in names)]
    client = runtime.RuntimeClient("/nonexistent")

    async def ask_reads(commands):  # (no socket: the unit tier)
        return list(answers)

    paused: list[int] = []

    async def pause() -> None:
        paused.append(len(paused))

    monkeypatch.setattr(client, "_ask_reads", ask_reads)
    monkeypatch.setattr(
        runtime, "parse_servers_state", lambda a, known=None: [srv(a.split()[-6], "x", 1)]
    )
    _, found = await client.read_state(names, step=READ_STEP, pause=pause)
    assert sorted(found) == names and len(paused) == 3  # before each of the 3 steps


async def test_backends_that_left_are_not_remembered_past_a_reload():
    """Soak s45: the counter of each backend an apply changed was kept for every backend
    ever named (a SIGHUP with a new service name each time: +1 a reload, for good)."""
    client = ScriptedClient()
    view = view_of(client)
    for k in range(50):
        client.state = {"web": {"x": srv("web", "x", 1)}, f"tmp{k}": {"y": srv(f"tmp{k}", "y", 2)}}
        await view.read_names()  # a reload: tmp<k-1> gone, tmp<k> new
        await view.read_all()
        view.mark_stale({"web", f"tmp{k}"})  # an apply's commands
        assert len(view._updated) <= 2
    # what they guard still holds: a read begun before the commands does not win
    stale = Read("100", view.counter - 1, {"web": {}}, False)
    assert view.merge(stale) and view.backends["web"]["x"].id == 1
