"""The server-state file kept by partial dumps (synapse.haproxy.stateblocks, statedump):
what it writes is what a whole dump would have written."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from state_fakes import KeptConnection, answer_from

from synapse.haproxy import statedump
from synapse.haproxy.sockets import UnexpectedAnswer
from synapse.haproxy.stateblocks import TAIL, Blocks, backend_rows, file_text, splice
from synapse.haproxy.statedump import StateDumper

HEAD = (
    "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight "
    "srv_iweight srv_time_since_last_change srv_check_status srv_port\n"
)


def row(backend: str, server: str, state: int = 2, since: int = 5) -> str:
    return f"3 {backend} 1 {server} 127.0.0.1 {state} 0 1 1 {since} 6 8080\n"


def dump(rows: dict[str, list[str]]) -> str:
    return HEAD + "".join(
        row(b, s) if isinstance(s, str) else row(b, *s) for b, ss in rows.items() for s in ss
    )


class Runtime(KeptConnection):
    """Answers from ``self.dump``; ``extra`` backends have no servers; counts commands."""

    path = "admin.sock"

    def __init__(self, text: str, extra: tuple[str, ...] = ()) -> None:
        self.dump, self.extra, self.pid = text, extra, "1"
        self.asked: list[str] = []

    async def ask(self, commands: list[str]) -> list[str]:
        self.asked += commands
        answers = [answer_from(self.dump, c, self.extra) for c in commands]
        return [a.replace("Pid: 1", f"Pid: {self.pid}") for a in answers]


def blocks_from(text: str, names: list[str]) -> Blocks:
    rows_of: dict[str, list[str]] = {}
    for line in text.splitlines()[2:]:
        rows_of.setdefault(line.split()[1], []).append(line)
    blocks = Blocks("1", HEAD, TAIL, names)
    for name in names:
        blocks.add(name, rows_of.get(name, []))
    assert file_text(blocks, rows_of) == text + TAIL
    return blocks


def test_a_spliced_file_is_the_whole_dump_of_the_new_states() -> None:
    before = dump({"a": ["s1", "s2"], "b": ["s1"], "d": ["s1"]})
    blocks = blocks_from(before, ["a", "b", "c", "d"])  # c: no servers yet
    before += TAIL
    after = dump({"a": ["s1", "s2"], "b": [("s1", 0)], "c": ["s1", "s2"], "d": ["s1"]})
    changed = {
        "b": [row("b", "s1", 0).rstrip("\n")],
        "c": [row("c", "s1").rstrip("\n"), row("c", "s2").rstrip("\n")],
    }
    text, new = splice(blocks, before, changed)
    assert text == after + TAIL
    assert new.length == len(text) and blocks.length == len(before)  # (the old untouched)
    emptied = dump({"b": [("s1", 0)], "c": ["s1", "s2"], "d": ["s1"]})
    assert splice(new, text, {"a": []})[0] == emptied + TAIL
    with pytest.raises(ValueError):
        splice(blocks, after, changed)  # not the file the blocks describe


async def test_rounds_read_the_touched_backends_and_a_share_of_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(statedump, "ROTATION", 3)
    monkeypatch.setattr(statedump, "CHUNK_GAP", 0.0)
    path = tmp_path / "state"
    names = [f"be{i}" for i in range(6)]
    states = {name: ["s1", "s2"] for name in names}
    runtime = Runtime(dump(states))
    dumper = StateDumper(runtime, path, lambda: True)  # type: ignore[arg-type]
    await dumper.dump()  # every backend, a batch at a time: not the 1.9 MB answer
    assert path.read_text() == runtime.dump + TAIL and dumper.whole_dumps == 1
    assert "show servers state" not in runtime.asked
    runtime.asked.clear()
    await dumper.dump()  # nothing changed: two backends read, nothing written
    assert runtime.asked == ["show info", "show servers state be0", "show servers state be1"]
    assert dumper.writes == 1
    # synapse's commands changed be5; HAProxy's checks changed be4 (the next round's share)
    states["be5"], states["be4"] = [("s1", 0), "s2"], ["s1", ("s2", 0)]
    runtime.dump = dump(states)
    dumper.touched({"be5"})
    await dumper.dump()
    assert path.read_text() == dump({**states, "be4": ["s1", "s2"]}) + TAIL
    assert dumper.writes == 2
    await dumper.dump()
    assert path.read_text() == runtime.dump + TAIL and dumper.writes == 3
    assert dumper.whole_dumps == 1
    # only the seconds since the last change differ: not written
    runtime.dump = runtime.dump.replace(" 1 5 6 ", " 1 7 6 ")
    for _ in range(3):
        await dumper.dump()
    assert dumper.writes == 3


async def test_rounds_wait_for_the_after_start_sweep_at_most_max_defer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the reader's after-start sweep runs (``deferred``), a round reads nothing:
    its steps would queue beside the sweep's; after MAX_DEFER it dumps all the same."""
    monkeypatch.setattr(statedump, "CHUNK_GAP", 0.0)
    now = [100.0]
    clock = SimpleNamespace(monotonic=lambda: now[0], thread_time=time.thread_time)
    monkeypatch.setattr(statedump, "time", clock)  # (statedump's own: not the loop's)
    runtime = Runtime(dump({"a": ["s1"]}))
    dumper = StateDumper(runtime, tmp_path / "state", lambda: True)  # type: ignore[arg-type]
    sweeping = [True]
    dumper.deferred = lambda: sweeping[0]
    assert await dumper.dump() == 0.0
    now[0] += statedump.MAX_DEFER - 1
    await dumper.dump()
    assert runtime.asked == [] and dumper.whole_dumps == 0
    now[0] += 1
    await dumper.dump()  # deferred MAX_DEFER: dumps all the same
    assert dumper.whole_dumps == 1
    sweeping[0] = False  # (the sweep ended, a later one defers from its own start)
    await dumper.dump()
    sweeping[0] = True
    runtime.asked.clear()
    await dumper.dump()
    assert runtime.asked == []


async def test_another_writer_or_another_process_makes_the_next_round_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(statedump, "CHUNK_GAP", 0.0)
    path = tmp_path / "state"
    runtime = Runtime(dump({"a": ["s1"], "b": ["s1"]}), extra=("c",))
    dumper = StateDumper(runtime, path, lambda: True)  # type: ignore[arg-type]
    await dumper.dump()
    path.write_text("the installer's dump before a reload\n")
    await dumper.dump()
    assert dumper.whole_dumps == 2 and path.read_text() == runtime.dump + TAIL
    runtime.pid = "2"  # restarted: its backends may differ
    runtime.dump = dump({"a": ["s1"], "b": ["s1"], "c": ["s1"]})
    await dumper.dump()
    assert dumper.whole_dumps == 3 and path.read_text() == runtime.dump + TAIL
    runtime.dump = "Unknown command.\n"  # an error answer never becomes the file
    dumper.touched({"a"})
    await dumper.dump()
    assert path.read_text() == dump({"a": ["s1"], "b": ["s1"], "c": ["s1"]}) + TAIL


async def test_touched_backends_stay_unsaved_until_a_round_wrote_or_checked_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A revive reads the dumper's unsaved backends at once: a touch stays unsaved while
    the rounds fail (here: the state file cannot be replaced), not only for ten seconds."""
    monkeypatch.setattr(statedump, "CHUNK_GAP", 0.0)
    path = tmp_path / "state"
    states = {"a": ["s1"], "b": ["s1"]}
    runtime = Runtime(dump(states))
    dumper = StateDumper(runtime, path, lambda: True)  # type: ignore[arg-type]
    dumper.touched({"a"})
    assert dumper.unsaved == {"a"}
    await dumper.dump()  # whole: written
    assert dumper.unsaved == set()
    dumper.touched({"b"})
    await dumper.dump()  # unchanged rows: the file holds them already
    assert dumper.unsaved == set()
    states["a"] = [("s1", 0)]
    runtime.dump = dump(states)
    dumper.touched({"a"})

    def refused(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(statedump.os, "replace", refused)
    for _ in range(3):
        await dumper.dump()
        assert dumper.unsaved == {"a"}
    monkeypatch.undo()
    monkeypatch.setattr(statedump, "CHUNK_GAP", 0.0)
    await dumper.dump()
    assert dumper.unsaved == set() and path.read_text() == runtime.dump + TAIL


def test_a_rounds_answers_are_decoded_a_few_backends_a_step():
    names = [f"b{i:02}" for i in range(2 * statedump.WHOLE_BATCH + 1)]
    answers = [HEAD + row(name, "s1") for name in names]
    into: dict[str, list[str]] = {}
    gone: list[str] = []
    steps = statedump._decoded(names, answers, HEAD, into, gone)
    next(steps)  # one step: the first WHOLE_BATCH backends only
    assert sorted(into) == names[: statedump.WHOLE_BATCH]
    assert sum(1 for _ in steps) == 2 and sorted(into) == names and not gone
    assert into["b00"] == [row("b00", "s1").rstrip("\n")]
    into.clear()
    answers[1] = "Can't find backend.\n"  # (HAProxy's answer: another process after all)
    assert list(statedump._decoded(names, answers, HEAD, into, gone)) == []
    assert gone == ["b01"]


def test_a_backends_answer_is_checked_against_the_files_header() -> None:
    """Its rows, None for a backend HAProxy lacks; refused: an error message, another
    header, a row of another backend, a torn last row (the process died answering)."""
    answer = dump({"web": ["a", "b"]})
    assert backend_rows("web", answer, HEAD) == [row("web", "a")[:-1], row("web", "b")[:-1]]
    assert backend_rows("web", HEAD, HEAD) == []
    assert backend_rows("web", "Can't find backend.\n", HEAD) is None
    other_head = HEAD.replace(" srv_port", " srv_port srvrecord")
    for bad in (
        "Unknown command.\n",
        other_head + row("web", "a"),
        dump({"web": ["a"], "api": ["b"]}),
        answer + "3 web 2 c 127.0.0.1 2 0 1",
    ):
        with pytest.raises(UnexpectedAnswer):
            backend_rows("web", bad, HEAD)


async def test_a_streak_of_failed_rounds_is_logged_once_and_its_end_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A full disk fails every round (one a second): one warning for the streak, not one a
    second, and a line when a round writes the file again."""
    monkeypatch.setattr(statedump, "CHUNK_GAP", 0.0)
    path = tmp_path / "state"
    runtime = Runtime(dump({"a": ["s1"]}))
    dumper = StateDumper(runtime, path, lambda: True)  # type: ignore[arg-type]

    def refused(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    def said(name: str) -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.getMessage() == name]

    caplog.set_level(logging.INFO, "synapse.haproxy")
    with monkeypatch.context() as full:
        full.setattr(statedump.os, "replace", refused)
        for _ in range(5):
            await dumper.dump()
    assert not path.exists()
    assert [r.levelno for r in said("haproxy_state_dump_failed")] == [logging.WARNING]
    assert said("haproxy_state_dump_recovered") == []
    await dumper.dump()
    assert path.read_text() == runtime.dump + TAIL
    recovered = said("haproxy_state_dump_recovered")
    assert [r.smartstack_fields["failed_rounds"] for r in recovered] == [5]  # type: ignore[attr-defined]
    await dumper.dump()  # (nothing changed: nothing written, nothing said)
    assert len(said("haproxy_state_dump_failed")) == len(said("haproxy_state_dump_recovered")) == 1
