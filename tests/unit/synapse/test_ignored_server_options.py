"""Records' haproxy_server_options left off because registry_server_options.allow is false
are said once per service and change (Ruby appends them: a `backup` would otherwise take
traffic here without a word)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from applier_fakes import FakeApplier, eventually, make_reconciler, running

from smartstack.logs import KeyValueFormatter
from smartstack.record import Registration
from synapse.config import RegistryServerOptions, ServiceConfig, SynapseConfig
from synapse.model import Found, Report
from synapse.options_report import report_options
from synapse.reload_diff import ServiceState
from synapse.selection import ORIGIN_PREVIOUS, Selection, select_servers

EVENT = "registry_server_options_ignored"
DENIED = RegistryServerOptions()  # allow: false, the default
DISCOVERY = {"method": "zookeeper", "hosts": ["h:1"], "path": "/web"}


def found(host: str, options: str | None = None) -> Found:
    registration = Registration(host=host, port=80, name=host, haproxy_server_options=options)
    return Found(registration, f"zk:/web/{host}")


def service() -> ServiceConfig:
    return ServiceConfig.model_validate({"discovery": DISCOVERY})


def test_a_selection_names_the_options_it_left_off_only_when_not_allowed() -> None:
    records = [found("10.0.0.1", "backup"), found("10.0.0.2", "weight 5 backup"),
               found("10.0.0.3", "backup"), found("10.0.0.4")]  # fmt: skip
    denied = select_servers(service(), records, None, DENIED)
    assert denied.ignored_options == ("backup", "weight 5 backup")  # distinct, sorted
    assert all(s.registry_options == "" for s in denied.servers)
    allowed = select_servers(service(), records, None, RegistryServerOptions(allow=True))
    assert allowed.ignored_options == ()
    # No policy: no HAProxy block, nothing the options would have gone into.
    assert select_servers(service(), records, None, None).ignored_options == ()
    # An empty answer keeps the previous servers (use_previous_backends): their options too.
    kept = select_servers(service(), [], denied, DENIED)
    assert kept.origin == ORIGIN_PREVIOUS and kept.ignored_options == denied.ignored_options


def ignored_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    formatter = KeyValueFormatter()
    return [formatter.format(r) for r in caplog.records if r.getMessage() == EVENT]


def test_the_warning_is_logged_once_and_again_when_the_options_change(
    caplog: pytest.LogCaptureFixture,
) -> None:
    state = ServiceState(service(), service())
    first = Selection(ignored_options=("backup",))
    with caplog.at_level(logging.WARNING, logger="synapse.reconciler"):
        report_options("web", first, state)
        report_options("web", Selection(ignored_options=("backup",)), state)  # the same: quiet
        assert len(ignored_lines(caplog)) == 1
        report_options("web", Selection(ignored_options=("backup", "maxconn 9")), state)
        report_options("web", Selection(), state)  # none left: nothing to say
        report_options("web", first, state)  # back: said again
    lines = ignored_lines(caplog)
    assert len(lines) == 3
    assert lines[0].split(" ", 1)[1] == (
        "level=warning logger=synapse.reconciler event=registry_server_options_ignored "
        'service=web options=backup effect="not on the server lines" '
        'hint="haproxy.registry_server_options.allow: true"'
    )
    assert 'options="backup; maxconn 9"' in lines[1]


def test_long_options_are_cut_in_the_line(caplog: pytest.LogCaptureFixture) -> None:
    many = tuple(f"maxconn {n}" for n in range(1000, 1200))
    with caplog.at_level(logging.WARNING, logger="synapse.reconciler"):
        report_options("web", Selection(ignored_options=many), ServiceState(service(), service()))
    (record,) = [r for r in caplog.records if r.getMessage() == EVENT]
    assert len(record.smartstack_fields["options"]) == 500


def report(*items: Found) -> Report:
    return Report("web", "zookeeper", items, 0, 0.0)


async def test_the_reconciler_says_it_for_a_service_whose_records_carry_options(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = SynapseConfig.model_validate({
        "services": {"web": {"discovery": DISCOVERY}},
        "haproxy": {"config_file_path": str(tmp_path / "h.cfg"), "reload_command": "true"},
        "startup_wait": 0.1,
    })  # fmt: skip
    applier = FakeApplier()
    rec = make_reconciler(config, applier)
    primary, sorry = found("10.0.0.1"), found("10.0.0.9", "backup")
    with caplog.at_level(logging.WARNING, logger="synapse.reconciler"):
        async with running(rec, applier, report(primary, sorry)):
            assert applier.hosts("web") == ["10.0.0.1", "10.0.0.9"]  # the backup serves too
            rec.report(report(primary, sorry, found("10.0.0.8", "backup")))
            await eventually(lambda: len(applier.hosts("web")) == 3, what="a third server")
            rec.report(report(primary, found("10.0.0.9", "backup weight 1")))
            await eventually(lambda: len(applier.hosts("web")) == 2, what="the change")
    lines = ignored_lines(caplog)
    assert len(lines) == 2, lines  # a third record with the same options: nothing new
    assert "service=web options=backup " in lines[0]
    assert 'options="backup weight 1"' in lines[1]
    assert 'hint="haproxy.registry_server_options.allow: true"' in lines[1]
