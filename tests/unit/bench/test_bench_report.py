"""The benchmarks' reporting: percentiles, targets, tables, JSON and output parsers."""

from __future__ import annotations

from bench.haproxy import serves
from bench.load import parse
from bench.prometheus_text import metric_sum, parse_prometheus
from bench.report import Result, Target, format_table, percentile


def test_percentile_interpolates_and_handles_edges() -> None:
    assert percentile([], 50) is None
    assert percentile([5.0], 99) == 5.0
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile(list(range(101)), 99) == 99


def test_targets_and_table_show_missed_figures() -> None:
    result = Result("demo", params={"n": 3})
    section = result.section("zookeeper")
    section.add("p99", 12.5, "ms", Target("<=", 10, "ms"))
    section.add("reloads", 0, target=Target("==", 0))
    section.add("note only", "not exposed")
    table = format_table(result)
    assert "12.5 ms" in table and "≤ 10 ms" in table and "MISSED" in table
    assert result.missed() == ["zookeeper: p99"]


def _reset() -> None:
    raise ConnectionResetError(104, "Connection reset by peer")


def _ask() -> None:
    _reset()


def test_a_failed_scenario_says_where_it_was_raised_and_from_where() -> None:
    result = Result("demo", params={})
    with result.attempt("etcd, 1 service"):
        _ask()
    (line,) = result.failures
    assert line.startswith("etcd, 1 service: ConnectionResetError: [Errno 104]"), line
    raised_at = _reset.__code__.co_firstlineno + 1
    asked_at = _ask.__code__.co_firstlineno + 1
    here = "test_bench_report.py"
    assert f"(at {here}:{raised_at} in _reset < {here}:{asked_at} in _ask < " in line, line


def test_wrk_summary_line_is_parsed() -> None:
    out = (
        "Running 2s test\n"
        'WRKJSON {"requests":100,"duration_us":2000000,"connect":1,"read":2,"write":0,'
        '"status":3,"timeout":0,"p50_us":250,"p99_us":1500,"p999_us":4000,"max_us":9000}\n'
    )
    load = parse(out)
    assert load.requests == 100 and load.failed == 6 and load.rate == 50
    assert load.p99_ms == 1.5


def test_prometheus_samples_are_summed_by_label() -> None:
    text = (
        "# HELP synapse_registry_reads_total x\n"
        'synapse_registry_reads_total{service="a",method="zookeeper"} 3.0\n'
        'synapse_registry_reads_total{service="b",method="etcd"} 4.0\n'
    )
    metrics = parse_prometheus(text)
    assert metric_sum(metrics, "synapse_registry_reads_total") == 7
    assert metric_sum(metrics, "synapse_registry_reads_total", method="etcd") == 4
    assert metric_sum(metrics, "absent") is None
    declared = parse_prometheus("# TYPE synapse_haproxy_reloads_total counter\n")
    assert metric_sum(declared, "synapse_haproxy_reloads_total") == 0


def test_a_server_serves_only_when_running_without_maint_or_drain() -> None:
    assert serves({"srv_op_state": 2, "srv_admin_state": 0})
    assert not serves({"srv_op_state": 2, "srv_admin_state": 1})  # forced maint
    assert not serves({"srv_op_state": 2, "srv_admin_state": 8})  # forced drain
    assert not serves({"srv_op_state": 0, "srv_admin_state": 0})  # down


def test_the_markdown_names_the_machines_yardstick_when_the_json_has_one() -> None:
    """Results from machines of the same name but other speeds tell themselves apart; JSON
    written before the yardstick existed still renders."""
    from bench.markdown import render

    machine = {"nproc": 2, "cpu_model": "AMD EPYC", "memory_gib": 23.5, "kernel": "k", "os": "D"}
    versions = {"smartstack_git": "abc", "haproxy": "2.6", "zookeeper": "3.8", "etcd": "3.4",
                "python": "3.11"}  # fmt: skip
    payload = {"name": "fleet", "date": "2026-11-30T17:00:00+00:00", "quick": False,
               "machine": machine, "versions": versions, "sections": []}  # fmt: skip
    assert "yardstick" not in render([payload])
    payload["machine"] = dict(machine, python_yardstick_ms=7.25)
    assert "yardstick 7.25 ms" in render([payload]).splitlines()[1]
    later = dict(payload, name="edge", duration_s=11.0,
                 machine=dict(machine, python_yardstick_ms=12.5))  # fmt: skip
    ran = [line for line in render([payload, later]).splitlines() if line.startswith("- ran")]
    assert ran == ["- ran 2026-11-30 (git abc) in 11 s, yardstick 12.5 ms"]  # each its own
    other = dict(later, name="soak", machine=dict(machine, cpu_model="Intel Xeon"))
    ran = [line for line in render([payload, other]).splitlines() if line.startswith("- ran")]
    assert ran == ["- ran 2026-11-30 (git abc) in 11 s, on Intel Xeon"]  # not the header's
