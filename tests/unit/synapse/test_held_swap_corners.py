"""Review s28, the corners of held swaps (pure): a hold's start has the state file say
``held_for`` within a second (a kill -9 before the next refresh restarted from the typo
alone), and a service served its previous list while its discovery lists no server is
said on /health and in the log (after a hold ended, it looked healthy)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path

import pytest
from applier_fakes import FakeApplier, eventually, make_reconciler, report, running
from synapse_testlib import service_config
from test_restart_held import OLD, ZK, Keys, Service, found, key_of, saved
from test_watcher_swap import FakeWatcher, service

from synapse.config import ServiceConfig, SynapseConfig
from synapse.model import Report, Sink
from synapse.previous_kept import PreviousKept
from synapse.restart_held import RestartHeld, discovery_key
from synapse.round_outputs import STATE_FILE_INTERVAL
from synapse.selection import ORIGIN_PREVIOUS, ORIGIN_STATE_FILE, select_servers
from synapse.state_cache import StateCache
from synapse.watcher_swap import ServiceWatchers


async def test_a_hold_beginning_is_told_once() -> None:
    began: list[str] = []
    made: list[FakeWatcher] = []

    def create(name: str, config: ServiceConfig, sink: Sink) -> FakeWatcher:
        made.append(FakeWatcher(name, config, sink))
        return made[-1]

    watchers = ServiceWatchers(create, lambda report: None, 60.0,  # type: ignore[arg-type]
                               held=began.append)  # fmt: skip
    await watchers.start("web", service("/a"))
    await watchers.follow({"web": service("/b")})
    [old, new] = made
    old.send(1, 2)
    new.send()  # the typo's list: nothing
    assert began == ["web"] and watchers.held_discovery("web") == new.discovery
    new.send()
    old.send(1)
    assert began == ["web"]  # (once a hold)


def state_config(tmp_path: Path, **web: object) -> SynapseConfig:
    discovery = {"method": "zookeeper", "hosts": ["h:1"], "path": "/web"}
    return SynapseConfig.model_validate({
        "services": {"web": {"discovery": discovery, **web}},
        "haproxy": {"config_file_path": str(tmp_path / "haproxy.cfg"), "reload_command": "true",
                    "coalesce_ms": 30, "state_file_path": str(tmp_path / "state.json")},
        "startup_wait": 0.3,
    })  # fmt: skip


def recorded(path: Path) -> dict[str, str]:
    return json.loads(path.read_text())["_synapse"]["discovery"]["services"]["web"]


async def test_a_hold_beginning_writes_held_for_without_a_change(tmp_path: Path) -> None:
    applier, keys = FakeApplier(), Keys("k-old")
    rec = make_reconciler(state_config(tmp_path), applier)
    rec.state_cache = StateCache(tmp_path / "state.json", ttl=86400, key_of=keys)
    async with running(rec, applier, report("web", "10.0.0.1")):
        path = tmp_path / "state.json"
        await eventually(lambda: path.exists() and recorded(path) == {"listing": "k-old"})
        await asyncio.sleep(STATE_FILE_INTERVAL)  # (the start's writes are over)
        keys.held = "k-typo"  # a SIGHUP's swap is held: no report, no selection changed
        rec.state_file_due()  # (the daemon's, at the hold's start)
        started = time.monotonic()
        await eventually(lambda: recorded(path).get("held_for") == "k-typo", 5, "held_for")
        assert time.monotonic() - started < STATE_FILE_INTERVAL + 1


def log_of(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    kept = ("previous_backends_kept", "previous_backends_kept_ended")
    return [(r.levelname, r.getMessage()) for r in caplog.records if r.getMessage() in kept]


async def test_a_previous_list_kept_while_nothing_is_listed_is_said_until_a_server(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """use_previous_backends (the default): a 60 s hold's end leaves the service so, as
    does every instance withdrawn."""
    caplog.set_level(logging.INFO)
    applier = FakeApplier()
    rec = make_reconciler(state_config(tmp_path), applier)
    async with running(rec, applier, report("web", "10.0.0.1", "10.0.0.2")):
        assert rec.previous_kept.degraded({"web"}) == []
        rec.report(report("web"))  # the discovery lists nothing: the previous list stays
        await eventually(lambda: rec.previous_kept.degraded({"web"}), what="degraded")
        assert applier.hosts("web") == ["10.0.0.1", "10.0.0.2"]
        [said] = rec.previous_kept.degraded({"web"})
        assert said.startswith("web: the discovery lists no servers; serving the previous "
                               "list (2 servers, use_previous_backends) since ")  # fmt: skip
        assert rec.previous_kept.degraded({"web"}, said={"web"}) == []  # (a held swap's)
        # Its watch lost since (review s29): the empty list may be stale, not the registry's.
        [said] = rec.previous_kept.degraded({"web"}, lost=lambda name: "TimeoutError: no answer")
        assert said.startswith("web: the discovery's last list had no servers, and its watch "
                               "is down (TimeoutError: no answer): the registry may list some "
                               "now; serving the previous list (2 servers, ")  # fmt: skip
        rec.report(report("web"))  # (again: said once)
        await asyncio.sleep(0.2)
        rec.report(report("web", "10.0.0.3"))  # a server again: over
        await eventually(lambda: applier.hosts("web") == ["10.0.0.3"], what="the server")
        assert rec.previous_kept.degraded({"web"}) == []
    assert log_of(caplog) == [("WARNING", "previous_backends_kept"),
                              ("INFO", "previous_backends_kept_ended")]  # fmt: skip


async def test_a_start_whose_first_list_is_empty_says_the_state_files_list(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The plain start (no hold) said nothing either: the same state, the same words."""
    caplog.set_level(logging.INFO)
    stamp = int(time.time())
    record = {"timestamp": stamp, "host": "10.9.9.9", "port": 80, "name": "old"}
    (tmp_path / "state.json").write_text(json.dumps({"web": {"old_10.9.9.9:80": record}}))
    applier = FakeApplier()
    rec = make_reconciler(state_config(tmp_path), applier)
    async with running(rec, applier, report("web")):
        assert applier.hosts("web") == ["10.9.9.9"]
        [said] = rec.previous_kept.degraded({"web"})
        assert "(1 servers, use_previous_backends)" in said
    assert log_of(caplog) == [("WARNING", "previous_backends_kept")]
    # with use_previous_backends false nothing is kept, nothing said
    rec = make_reconciler(state_config(tmp_path, use_previous_backends=False), FakeApplier())
    async with running(rec, rec.applier, report("web")):  # type: ignore[arg-type]
        assert rec.previous_kept.degraded({"web"}) == []


def test_a_restart_hold_is_said_by_itself_and_its_ttl_end_by_this(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Review s28: the hold's end at state_file_ttl left the saved list served as
    "previous" (use_previous_backends), /health silent."""
    typo = service_config({**ZK, "path": "/nerve/wbe"})  # (use_previous_backends: the default)
    filters = typo.discovery.label_filters
    path = tmp_path / "state.json"
    saved(path, discovery_key(OLD.discovery), key_of(typo))
    restarted = StateCache(path, ttl=2.0)  # (the saved servers are 1-2 s from too old)
    restarted.load()
    due: list[str] = []
    held, kept = RestartHeld(due.append), PreviousKept()
    service = Service(typo, Report("web", "zookeeper", (), filters=filters))

    def select(previous: object = None) -> object:
        chosen = select_servers(typo, (), previous, filters=filters)  # type: ignore[arg-type]
        selection = held.select("web", service, chosen, restarted, None)
        kept.observe("web", service.report, selection, held.held)
        return selection

    async def run() -> object:
        selection = select()
        assert selection.origin == ORIGIN_STATE_FILE  # type: ignore[attr-defined]
        assert held.degraded({"web"}) and kept.degraded({"web"}) == []  # (said once)
        await asyncio.sleep(3.0)  # the TTL's end: selected again under the config's rules
        assert due == ["web"]
        return select(selection)

    caplog.set_level(logging.INFO)
    after = asyncio.run(run())
    assert [s.port for s in after.servers] == [1, 2]  # type: ignore[attr-defined]
    assert held.degraded({"web"}) == [] and kept.degraded({"web"})
    assert log_of(caplog) == [("WARNING", "previous_backends_kept")]
    # the discovery lists a server: over
    service.report = Report("web", "zookeeper", tuple(found(3)), filters=filters)
    chosen = select_servers(typo, found(3), after, filters=filters)  # type: ignore[arg-type]
    kept.observe("web", service.report, held.select("web", service, chosen, restarted, None),
                 held.held)  # fmt: skip
    assert kept.degraded({"web"}) == []
    assert log_of(caplog)[-1] == ("INFO", "previous_backends_kept_ended")


def test_label_filters_that_drop_every_record_are_said_by_their_own_line() -> None:
    kept = PreviousKept()
    config = service_config(ZK)  # (use_previous_backends: the default)
    filters = config.discovery.label_filters
    before = select_servers(config, found(1), None, filters=filters)
    listed = tuple(found(2, zone="az-1"))
    selection = select_servers(config, listed, before, filters=filters)
    assert selection.origin == ORIGIN_PREVIOUS and selection.unmatched
    kept.observe("web", Report("web", "zookeeper", listed, filters=filters), selection, ())
    assert kept.degraded({"web"}) == []  # (label_filters_match_nothing's)
