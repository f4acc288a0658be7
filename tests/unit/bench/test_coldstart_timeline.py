"""bench.coldstart_timeline: a cold start's phases from bench.coldstart_trace's marks."""

from __future__ import annotations

from bench.coldstart_timeline import PHASES, first_marks, format_phases, phases

TRACE = """\
100.000000 7 = traced
100.150000 7 > ForkedValidation.__init__
100.151000 7 < ForkedValidation.__init__
100.160000 8 > Reconciler._select_all
100.390000 7 > ForkedValidation.answer
100.560000 7 < ForkedValidation.answer
100.700000 7 < SynapseDaemon.start
101.200000 7 = report #1
101.500000 7 > Reconciler._select_all
101.650000 7 < Reconciler._select_all
101.660000 7 > HAProxyController._render
102.100000 7 < HAProxyController._render
102.100100 7 > HAProxyController._render
102.140000 7 < ManagedHAProxy._refuse_taken_ports
102.700000 7 < ManagedHAProxy.start
102.720000 7 < HAProxyController._render
"""


def test_the_phases_are_the_first_marks_of_the_daemon_in_order() -> None:
    marks = first_marks(TRACE.splitlines(), spawn=99.99, pid=7)
    assert marks["> Reconciler._select_all"] == 101.5 - 99.99  # (pid 8's mark left out)
    assert marks["> HAProxyController._render"] == 101.66 - 99.99  # the first render
    marks["served"] = 2.75
    rows = {name: (start, end) for name, start, end in phases(marks)}
    assert list(rows) == [name for name, _, _ in PHASES]
    assert rows["imports"] == (0.0, 100.15 - 99.99)
    start, end = rows["render"]
    assert start is not None and end is not None and round(end - start, 3) == 0.44
    start, end = rows["served (bench poll, 5 ms)"]
    assert (round(start, 2), end) == (2.71, 2.75)
    text = format_phases(phases(marks))
    assert "render" in text and "(not seen)" not in text


def test_a_missing_mark_is_shown_not_guessed() -> None:
    marks = first_marks(TRACE.splitlines(), spawn=99.99, pid=7)  # no "served"
    rows = phases(marks)
    assert rows[-1][2] is None
    assert format_phases(rows).splitlines()[-1].endswith("(not seen)")


def test_the_tracer_marks_calls_and_names_what_it_cannot_find(tmp_path, monkeypatch) -> None:
    import types

    from bench import coldstart_trace

    class ForkedValidation:
        def answer(self) -> int:
            return 42

    module = types.ModuleType("synapse.config_child")
    module.ForkedValidation = ForkedValidation  # type: ignore[attr-defined]
    out = tmp_path / "trace.txt"
    marks = coldstart_trace.Marks(str(out))
    marks.patch(module)  # (__init__ is ForkedValidation's own here: object's, wrapped too)
    assert ForkedValidation().answer() == 42
    monkeypatch.setitem(coldstart_trace.MARKS, "synapse.config_child", ("Gone.answer",))
    marks.patch(module)
    lines = [line.split(" ", 2)[2] for line in out.read_text().splitlines()]
    assert "> ForkedValidation.answer" in lines and "< ForkedValidation.answer" in lines
    assert lines[-1] == "missing name synapse.config_child.Gone.answer"
