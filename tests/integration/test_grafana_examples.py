"""examples/grafana: every metric the alert rules and the dashboard name exists, either in
our code (nerve's and synapse's /metrics) or in a real HAProxy 2.6 exporter's output."""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from metric_registries import sample_names

from testbed.process import free_port

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "grafana"
OURS = ("nerve_", "synapse_")
PROMETHEUS_OWN = {"up"}  # Prometheus' per-target series
# Exposed sample names per prometheus_client type (counters gain _total).
SUFFIXES = {"Counter": ("_total",), "Gauge": ("",), "Histogram": ("_bucket", "_sum", "_count"),
            "Summary": ("_sum", "_count"), "Info": ("_info",), "Enum": ("",)}  # fmt: skip
# (smartstack.labelled_metrics' LabelledCounter / LabelledGauge expose the same samples)
DECLARED = re.compile(
    r"\b(?:Labelled)?(Counter|Gauge|Histogram|Summary|Info|Enum)\(\s*\"([a-zA-Z_:][\w:]*)\""
)


def our_metrics() -> set[str]:
    """Every sample name nerve and synapse can expose: their registries' families (declared
    from a table, smartstack/metric_families.py) and any declared in the source directly."""
    names: set[str] = sample_names()
    for package in ("nerve", "synapse", "smartstack"):
        for path in (ROOT / package).rglob("*.py"):
            for kind, name in DECLARED.findall(path.read_text()):
                base = name.removesuffix("_total") if kind == "Counter" else name
                names |= {base + suffix for suffix in SUFFIXES[kind]}
    return names


@pytest.fixture(scope="module")
def haproxy_metrics(tmp_path_factory) -> Iterator[set[str]]:
    """The metric names a real HAProxy 2.6's built-in exporter serves."""
    from testbed.haproxy import HAProxyProcess, minimal_global

    workdir = tmp_path_factory.mktemp("hapx")
    port = free_port()
    config = minimal_global(workdir) + (
        "defaults\n    mode http\n    timeout connect 1s\n    timeout client 5s\n"
        "    timeout server 5s\n"
        f"frontend prometheus\n    bind 127.0.0.1:{port}\n"
        "    http-request use-service prometheus-exporter if { path /metrics }\n"
        f"frontend web\n    bind 127.0.0.1:{free_port()}\n    default_backend web\n"
        f"backend web\n    server s1 127.0.0.1:{free_port()} check\n"
    )
    proc = HAProxyProcess(config, workdir).start()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            text = reply.read().decode()
    finally:
        proc.stop()
    names = set(re.findall(r"^# TYPE (\S+) ", text, re.M))
    assert len(names) > 100, text[:500]  # frontend, backend, server and process families
    yield names


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression uses (ours, HAProxy's, Prometheus' own)."""
    unquoted = re.sub(r'"[^"]*"', '""', expr)
    tokens = set(re.findall(r"[a-zA-Z_:][\w:]*", unquoted))
    return {t for t in tokens if t.startswith((*OURS, "haproxy_")) or t in PROMETHEUS_OWN}


def unknown(exprs: list[str], known: set[str]) -> dict[str, set[str]]:
    found = {expr: metric_names(expr) for expr in exprs}
    problems = {expr: names - known for expr, names in found.items() if names - known}
    problems.update({expr: {"(no metric at all)"} for expr, names in found.items() if not names})
    return problems


def alert_rules() -> list[dict]:
    doc = yaml.safe_load((EXAMPLES / "alerts.yml").read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def dashboard_exprs() -> list[str]:
    dash = json.loads((EXAMPLES / "smartstack-dashboard.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    exprs += [v["query"]["query"] for v in dash["templating"]["list"]]
    return exprs


def test_alert_rules_are_well_formed_and_cover_the_four_failures() -> None:
    rules = alert_rules()
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names))
    for rule in rules:
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
    used = set().union(*(metric_names(rule["expr"]) for rule in rules))
    assert "haproxy_backend_active_servers" in used  # a service with no UP server
    assert "synapse_watcher_connected" in used  # registry disconnected
    assert "synapse_haproxy_reload_failures_total" in used  # reloads failing
    assert "synapse_haproxy_config_invalid" in used  # config invalid (a gauge: it holds)


# Prometheus' clock minus a host's timestamp: off by the host's clock error (1 h behind:
# a healthy nerve paged; 1 h ahead: a stalled one hidden for an hour).
CLOCKS_COMPARED = re.compile(r"time\(\)\s*-\s*[a-zA-Z_:][\w:]*_timestamp_seconds\b")


def test_no_rule_or_panel_compares_prometheus_clock_with_a_hosts() -> None:
    exprs = [rule["expr"] for rule in alert_rules()] + dashboard_exprs()
    assert [expr for expr in exprs if CLOCKS_COMPARED.search(expr)] == []
    assert CLOCKS_COMPARED.search("time() - nerve_heartbeat_timestamp_seconds > 60")
    [stalled] = [rule for rule in alert_rules() if rule["alert"] == "SmartstackNerveStalled"]
    assert stalled["expr"].startswith("changes(nerve_heartbeat_timestamp_seconds[")
    assert stalled["for"]  # a restarted nerve's first sample alone shows no change yet


def test_every_metric_in_the_rules_and_the_dashboard_exists(haproxy_metrics) -> None:
    known = our_metrics() | haproxy_metrics | PROMETHEUS_OWN
    assert {"nerve_check_results_total", "synapse_watch_to_applied_seconds_bucket"} <= known
    exprs = [rule["expr"] for rule in alert_rules()] + dashboard_exprs()
    assert not unknown(exprs, known)


def test_the_check_catches_a_misspelled_metric(haproxy_metrics) -> None:
    known = our_metrics() | haproxy_metrics
    bad = ["haproxy_backend_active_server == 0", "rate(synapse_applies[5m])", "vector(1)"]
    assert set(unknown(bad, known)) == set(bad)


def test_the_dashboard_is_a_grafana_dashboard() -> None:
    dash = json.loads((EXAMPLES / "smartstack-dashboard.json").read_text())
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)) and dash["uid"] and dash["title"]
    for panel in dash["panels"]:
        box = panel["gridPos"]
        assert box["x"] + box["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["targets"] and panel["datasource"]["uid"] == "${DS_PROMETHEUS}"


def test_the_scrape_config_loads_the_rules_and_scrapes_the_three_jobs() -> None:
    doc = yaml.safe_load((EXAMPLES / "prometheus.yml").read_text())
    assert doc["rule_files"] == ["alerts.yml"]
    jobs = {job["job_name"]: job for job in doc["scrape_configs"]}
    assert set(jobs) == {"nerve", "synapse", "haproxy"}
    alerted = {m.group(1) for m in re.finditer(r'job=~"([^"]+)"', (EXAMPLES / "alerts.yml")
               .read_text())}  # fmt: skip
    assert alerted == {"nerve|synapse|haproxy"}
