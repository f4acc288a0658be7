"""Pure parts of deliverables 1, 2 and 4 of issue 10: the crash restart delay, the state
dump comparison, /health's problems and /health/<service>'s verdict."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest
from applier_fakes import eventually
from state_fakes import KeptConnection, answer_from

import synapse.change_gate as change_gate
from synapse.change_gate import ChangeGate
from synapse.haproxy import stateblocks, statedump
from synapse.haproxy.health import problems, service_verdict
from synapse.haproxy.stateblocks import TAIL, rows_digest
from synapse.haproxy.statedump import (
    DUMP_INTERVAL,
    MAX_PAUSE,
    StateDumper,
    comparable,
    next_pause,
)
from synapse.haproxy.status import HAProxyStatus
from synapse.haproxy.supervisor import restart_delay


def test_the_first_crash_restarts_at_once_and_a_crash_loop_backs_off() -> None:
    assert restart_delay(1, 2.0) == 0.0
    assert [restart_delay(n, 2.0) for n in (2, 3, 4)] == [2.0, 4.0, 8.0]
    assert restart_delay(2, 0.0) == 0.5  # a zero restart_interval still backs off
    assert restart_delay(30, 2.0) == 60.0


DUMP = (
    "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight "
    "srv_iweight srv_time_since_last_change rest\n"
    "3 web 1 a 127.0.0.1 2 0 1 1 {since} 6 3 4 6 0 0 0 - 8080 - 0 0 - - 0\n"
)


def test_the_state_dump_compares_without_the_seconds_since_the_last_change() -> None:
    assert comparable(DUMP.format(since=5)) == comparable(DUMP.format(since=6))
    down = DUMP.format(since=5).replace(" 2 0 1 1 ", " 0 0 1 1 ")
    assert comparable(down) != comparable(DUMP.format(since=5))


@pytest.mark.parametrize("rows", [0, 1, stateblocks.CHUNK - 1, stateblocks.CHUNK + 1, 1000])
@pytest.mark.parametrize("ending", ["\n", ""])
def test_the_dump_is_digested_row_by_row_whatever_the_chunks(rows: int, ending: str) -> None:
    # Split a chunk at a time (not all rows at once): the digest is still of every row,
    # without its seconds column, each ended by a newline.
    head = DUMP.split("\n")[:2]
    body = [
        f"3 web {i} s{i} 127.0.0.1 2 0 1 1 {i % 7} 6 3 4 6 0 0 0 - 80 - 0 0 - - 0"
        for i in range(rows)
    ]
    wanted = [*head, *(r.replace(f" 1 1 {i % 7} 6 ", " 1 1 6 ") for i, r in enumerate(body))]
    digest = hashlib.blake2b(("\n".join(wanted) + "\n").encode(), digest_size=16).digest()
    assert comparable("\n".join([*head, *body]) + ending) == digest


def test_health_problems_name_what_keeps_haproxy_from_the_desired_state() -> None:
    info = HAProxyStatus()
    assert problems(info, None, True, False, True) == []
    assert problems(info, None, None, False, True) == []  # not managed: nothing to run
    assert problems(info, None, True, False, False) == ["no desired state applied yet (starting)"]
    assert problems(info, None, False, False, True) == ["HAProxy is not running"]
    info.refused("haproxy -c: bad line", None, [])
    info.reload_failed("cannot run haproxy: No such file", "start", 1.0)
    found = problems(info, "sock: Connection refused", True, True, True)
    assert [line.split(":")[0] for line in found] == [
        "HAProxy's admin socket does not answer",
        "the config cannot be applied (invalid)",
        "the last reload or start failed",
        "HAProxy still differs from the desired config after reloading it",
    ]


def test_a_service_is_healthy_with_at_least_min_up_servers_up() -> None:
    servers = {"a": "UP", "b": "DOWN", "c": "MAINT"}
    ok, body = service_verdict("web", "web", servers, 1)
    assert ok and body["up"] == 1 and body["servers"] == servers
    assert not service_verdict("web", "web", servers, 2)[0]
    assert service_verdict("web", "web", {}, 0)[0]  # min 0: an empty backend is fine
    ok, body = service_verdict("web", "web", None, 0)
    assert not ok and "does not run this backend" in body["error"]


def test_the_dump_pace_follows_its_cpu_cost_and_is_capped() -> None:
    assert next_pause(0.0) == DUMP_INTERVAL
    assert next_pause(0.2) == 20 * 0.2  # a 200 ms parse: every 4 s (5 % of a core)
    assert next_pause(10.0) == MAX_PAUSE  # not 200 s of a stale state file
    assert MAX_PAUSE <= 30


FULL_DUMP = (
    "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight "
    "srv_iweight srv_time_since_last_change srv_check_status srv_check_result "
    "srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn "
    "srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr "
    "srv_agent_port\n3 web 1 a 127.0.0.1 2 0 1 1 5 6 3 4 6 0 0 0 - 8080 - 0 0 - - 0\n"
)


class AnsweringRuntime(KeptConnection):
    """A runtime socket that answers from the dump ``answer`` at once."""

    path = "admin.sock"

    def __init__(self, answer: str) -> None:
        self.answer = answer

    async def ask(self, commands: list[str]) -> list[str]:
        return [answer_from(self.answer, command) for command in commands]


class SlowRuntime(AnsweringRuntime):
    """A runtime socket whose answer takes ``delay`` seconds of waiting (no CPU)."""

    def __init__(self, delay: float) -> None:
        super().__init__(FULL_DUMP)
        self.delay = delay

    async def ask(self, commands: list[str]) -> list[str]:
        await asyncio.sleep(self.delay)
        return await super().ask(commands)


async def test_a_slow_socket_answer_does_not_stretch_the_next_pause(tmp_path: Path) -> None:
    dumper = StateDumper(SlowRuntime(0.15), tmp_path / "state", lambda: True)  # type: ignore[arg-type]
    cost = await dumper.dump()
    assert cost < 0.05  # the wait for the answer is not the dump's cost
    assert next_pause(cost) == DUMP_INTERVAL
    assert dumper.writes == 1 and (tmp_path / "state").read_text() == FULL_DUMP + TAIL


async def test_an_error_answer_never_becomes_the_state_file(tmp_path: Path) -> None:
    # Checked by the dump's header, not by parsing every row (that held the GIL for
    # ~0.3 s per dump at 20,000 servers while changes waited for it).
    torn = FULL_DUMP + "3 web 2 b 127.0.0.1 2 0 1 1 5 6\n"  # the process died mid-row
    for answer in ("Unknown command. Please enter one of the following commands only:\n", "", torn):
        dumper = StateDumper(AnsweringRuntime(answer), tmp_path / "state", lambda: True)  # type: ignore[arg-type]
        await dumper.dump()
        assert dumper.writes == 0 and not (tmp_path / "state").exists()
    dumper = StateDumper(AnsweringRuntime(FULL_DUMP), tmp_path / "state", lambda: True)  # type: ignore[arg-type]
    await dumper.dump()
    await dumper.dump()  # unchanged: not written again
    assert dumper.writes == 1 and (tmp_path / "state").read_text() == FULL_DUMP + TAIL


async def test_a_dump_waits_while_an_apply_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first apply reads every server after HAProxy serves; a dump beside it (its
    # check in a thread) slowed it and the change waiting for it (bench: first change).
    monkeypatch.setattr(statedump, "DUMP_INTERVAL", 0.01)
    lock = asyncio.Lock()
    dumper = StateDumper(AnsweringRuntime(FULL_DUMP), tmp_path / "state", lambda: True)  # type: ignore[arg-type]
    await lock.acquire()  # an apply runs
    dumper.start(lock)
    try:
        await asyncio.sleep(0.1)
        assert dumper.writes == 0  # ten intervals passed, all during the apply
        lock.release()
        await eventually(lambda: dumper.writes == 1)
        assert (tmp_path / "state").read_text() == FULL_DUMP + TAIL
    finally:
        await dumper.stop()


def big_dump(rows: int, state: str = "2") -> str:
    row = FULL_DUMP.splitlines()[-1]
    return FULL_DUMP + "".join(
        row.replace(" a 127.0.0.1 2 ", f" s{i} 127.0.0.1 {state} ") + "\n" for i in range(rows)
    )


class ApplyAfterAnswer(AnsweringRuntime):
    """Answers, then an apply takes the lock at once (``hold`` seconds): it writes the
    state file itself (as the installer does before a reload) and changes the answer."""

    def __init__(self, answers: list[str], lock: asyncio.Lock, path: Path, hold: float) -> None:
        super().__init__(answers[0])
        self.answers, self.lock, self.path, self.hold = answers, lock, path, hold
        self.asked = 0

    async def ask(self, commands: list[str]) -> list[str]:
        self.asked += 1
        if self.asked == 1:
            asyncio.get_running_loop().create_task(self._apply())
        return await super().ask(commands)

    async def _apply(self) -> None:
        async with self.lock:
            self.path.write_text("the installer's dump")
            self.answer = self.answers[-1]  # (HAProxy's states changed too)
            await asyncio.sleep(self.hold)


async def test_a_dump_read_before_an_installer_wrote_the_file_does_not_replace_it(
    tmp_path: Path,
) -> None:
    # The comparison of a large dump runs on the event loop a chunk at a time and waits
    # for an apply that starts meanwhile; when that apply's installer writes the file
    # (before a reload) what the dump read is older: it must not replace the file, and
    # the next round writes what HAProxy answers then.
    lock, path = asyncio.Lock(), tmp_path / "state"
    old, new = big_dump(3 * stateblocks.CHUNK), big_dump(3 * stateblocks.CHUNK, state="0")
    runtime = ApplyAfterAnswer([old, new], lock, path, hold=0.2)
    dumper = StateDumper(runtime, path, lambda: True)  # type: ignore[arg-type]
    dumper.start(lock)
    await dumper.stop()  # (only the lock is wanted from start())
    dump = asyncio.create_task(dumper.dump())
    await asyncio.sleep(0.1)
    assert not dump.done() and dumper.writes == 0  # waiting for the apply, mid-check
    await asyncio.wait_for(dump, 5)
    assert dumper.writes == 0 and path.read_text() == "the installer's dump"
    await dumper.dump()
    assert dumper.writes == 1 and path.read_text() == new + TAIL
    blocks = dumper._blocks
    assert blocks is not None and blocks.digests == {"web": rows_digest(new.splitlines()[2:])}
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # none left


async def test_applies_that_keep_coming_do_not_starve_the_dump(tmp_path: Path) -> None:
    # Applies with 1 ms gaps (a burst): the dump takes its turn in the lock's queue
    # between two of them for each chunk, instead of looking now and then and finding
    # the lock held nearly every time (the state file stayed stale for seconds).
    lock, path = asyncio.Lock(), tmp_path / "state"
    dumper = StateDumper(AnsweringRuntime(big_dump(2 * stateblocks.CHUNK)), path, lambda: True)  # type: ignore[arg-type]
    dumper.start(lock)
    await dumper.stop()
    stop = False

    async def applies() -> None:
        while not stop:
            async with lock:
                await asyncio.sleep(0.03)
            await asyncio.sleep(0.001)

    busy = asyncio.create_task(applies())
    try:
        await asyncio.wait_for(dumper.dump(), 3)
    finally:
        stop = True
        await busy
    assert dumper.writes == 1 and path.read_text() == big_dump(2 * stateblocks.CHUNK) + TAIL


async def test_a_dump_waits_while_a_change_is_on_its_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(change_gate, "MAX_WAIT", 5.0)
    dumper = StateDumper(AnsweringRuntime(FULL_DUMP), tmp_path / "state", lambda: True)  # type: ignore[arg-type]
    dumper.change_gate = gate = ChangeGate()  # (the reader's: ``state_dumper``)
    gate.change()
    dump = asyncio.create_task(dumper.dump())
    await asyncio.sleep(0.1)
    assert not dump.done() and dumper.writes == 0, "the change goes first"
    gate.done()
    await asyncio.wait_for(dump, 5)
    assert dumper.writes == 1 and gate.waits >= 1
