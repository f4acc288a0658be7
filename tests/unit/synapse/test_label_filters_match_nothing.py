"""A list whose every record the service's label_filters drop (a value typo, ``az1`` ->
``az-1``) is said, once per change, on the log, /status and /health (review s27: a restart
with such a typo answered 503 to 298 of 308 requests with no word from synapse). Airbnb's
semantics stay: the service gets no server (or its defaults, or its previous list)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from smartstack.record import Registration
from synapse.config import ServiceConfig
from synapse.model import Found
from synapse.options_report import report_options
from synapse.reload_diff import ServiceState
from synapse.selection import ORIGIN_DEFAULT, no_server_reason, select_servers
from synapse.status import service_status
from synapse.status_page import service_data

RECORDS = [Found(Registration("127.0.0.1", p, f"i{p}", labels={"zone": "az1"}), f"zk:{p}")
           for p in (1, 2, 3)]  # fmt: skip


def config(value: str = "az-1", **extra: Any) -> ServiceConfig:
    zk = {"method": "zookeeper", "hosts": ["127.0.0.1:2181"], "path": "/svc/web"}
    filters = [{"label": "zone", "value": value}]
    return ServiceConfig.model_validate({"discovery": {**zk, "label_filters": filters}, **extra})


def test_a_selection_counts_the_records_its_filters_all_dropped() -> None:
    assert select_servers(config(), RECORDS, None).unmatched == 3
    assert select_servers(config(), RECORDS, None).servers == ()
    assert select_servers(config("az1"), RECORDS, None).unmatched == 0
    assert select_servers(config(), [], None).unmatched == 0  # nothing listed: nothing dropped
    defaults = config(default_servers=[{"host": "127.0.0.9", "port": 80}])
    chosen = select_servers(defaults, RECORDS, None)
    assert chosen.origin == ORIGIN_DEFAULT and chosen.unmatched == 3
    previous = select_servers(config("az1"), RECORDS, None)
    kept = select_servers(config(use_previous_backends=True), RECORDS, previous)
    assert len(kept) == 3 and kept.unmatched == 3


def test_a_reports_filters_are_used_instead_of_the_configs() -> None:
    # the running watcher's list after a SIGHUP changed the filters (synapse.watcher_swap)
    old = config("az1").discovery.label_filters
    assert len(select_servers(config(), RECORDS, None, filters=old)) == 3
    assert no_server_reason(RECORDS, old) is None
    assert no_server_reason([], old) == "the new discovery lists no servers"
    assert no_server_reason(RECORDS, config().discovery.label_filters) == (
        "3 records, every one dropped by label_filters zone=az-1"
    )


def test_it_is_said_once_when_it_starts_and_once_when_it_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    cfg = config()
    state = ServiceState(cfg, cfg)
    for _ in range(3):  # the state file's list, then the watcher's reports: one line
        state.selection = select_servers(cfg, RECORDS, None)
        report_options("web", state.selection, state)
    [said] = [r for r in caplog.records if r.getMessage() == "label_filters_match_nothing"]
    fields = said.smartstack_fields  # type: ignore[attr-defined]
    assert said.levelno == logging.ERROR
    assert fields == {"service": "web", "records": 3, "filters": "zone=az-1",
                      "effect": "no server"}  # fmt: skip
    assert service_status({"web": state})["web"]["label_filters_match_nothing"] == {
        "records": 3, "filters": "zone=az-1"
    }  # fmt: skip
    state.selection = select_servers(cfg, [*RECORDS[:1], _az("-1")], None)
    report_options("web", state.selection, state)
    assert [r.getMessage() for r in caplog.records][-1] == "label_filters_match_again"
    assert service_status({"web": state})["web"]["label_filters_match_nothing"] is None


def _az(suffix: str) -> Found:
    return Found(Registration("127.0.0.1", 9, "i9", labels={"zone": f"az{suffix}"}), "zk:9")


def test_the_status_page_shows_it_as_the_services_problem() -> None:
    view = {"servers": [], "label_filters_match_nothing": {"records": 3, "filters": "zone=az-1"}}
    data, _ = service_data("web", view, {}, {})
    assert data["w"]["e"] == "3 records, every one dropped by label_filters zone=az-1"
    held = {"watcher": {"replacing": {"empty": "the new discovery lists no servers"}}}
    data, _ = service_data("web", held, {}, {})
    assert data["w"]["e"].startswith("new discovery: the new discovery lists no servers")


def test_a_list_that_merely_empties_keeps_it_said(caplog: pytest.LogCaptureFixture) -> None:
    """Records 3 -> 0 -> 1 with the typo in place: one match_nothing, no match_again, and
    /status keeps it (review s27 cr2: match_again with 0 servers, /health's degraded gone)."""
    caplog.set_level(logging.INFO)
    cfg = config()
    state = ServiceState(cfg, cfg)
    for found in (RECORDS, [], RECORDS[:1]):
        state.selection = select_servers(cfg, found, state.selection)
        report_options("web", state.selection, state)
        assert service_status({"web": state})["web"]["label_filters_match_nothing"] is not None
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("label_filters")]
    assert said == ["label_filters_match_nothing"]
    state.selection = select_servers(cfg, [_az("-1")], state.selection)  # a record passes
    report_options("web", state.selection, state)
    assert [r.getMessage() for r in caplog.records][-1] == "label_filters_match_again"


def test_an_empty_list_after_the_filters_changed_drops_the_old_filters_count() -> None:
    """A SIGHUP fixes zone=az-1 -> az1 while the path is momentarily empty: the 3 records
    the typo dropped are not said of the corrected filter (review s27 cr4: /health said
    "3 records, every one dropped by label_filters zone=az1"); unchanged filters keep it."""
    typo = select_servers(config(), RECORDS, None)
    assert typo.unmatched == 3
    assert select_servers(config(), [], typo).unmatched == 3  # (same filters: still said)
    fixed = select_servers(config("az1"), [], typo)
    assert fixed.unmatched == 0
    assert select_servers(config("az1"), [], fixed).unmatched == 0
    held = select_servers(config("az1"), [], typo, filters=config().discovery.label_filters)
    assert held.unmatched == 3  # the running watcher's own (old) filters: still the typo's
