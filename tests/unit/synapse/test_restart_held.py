"""Review s27/cr2 (pure): the state file records the discovery its servers came from, and a
start whose config's discovery differs and lists no server serves them as they were served
(synapse.restart_held), not through the new config's label_filters or
use_previous_backends."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import pytest
from synapse_testlib import service_config

from smartstack.record import Registration
from synapse.config import ServiceConfig
from synapse.model import Found, Report
from synapse.restart_held import RestartHeld, discovery_key
from synapse.selection import ORIGIN_STATE_FILE, Selection, select_servers
from synapse.state_cache import StateCache

AZ = [{"label": "zone", "value": "az1"}]
ZK = {"method": "zookeeper", "hosts": ["127.0.0.1:2181"], "path": "/nerve/web", "label_filters": AZ}
OLD = service_config(ZK, use_previous_backends=False)
PATH_TYPO = service_config({**ZK, "path": "/nerve/wbe"}, use_previous_backends=False)
LABEL_TYPO = service_config({**ZK, "label_filters": [{"label": "zone", "value": "az-1"}]})


def found(*ports: int, zone: str = "az1") -> list[Found]:
    return [Found(Registration(host="10.0.0.1", port=p, name=f"s{p}", labels={"zone": zone}),
                  f"zk:{p}") for p in ports]  # fmt: skip


def saved(path: Path, key: str | None) -> StateCache:
    """A state file an earlier run wrote (web: s1, s2, listed by the discovery ``key``),
    read back by a restarted synapse."""
    cache = StateCache(path, ttl=3600, key_of=lambda _name: key)
    cache.update({"web": select_servers(OLD, found(1, 2), None)}, ["web"])
    restarted = StateCache(path, ttl=3600)
    restarted.load()
    return restarted


@dataclass
class Service:
    config: ServiceConfig
    report: Report | None = None


def test_the_key_follows_the_discovery_settings_label_filters_included() -> None:
    key = discovery_key(OLD.discovery)
    assert key == discovery_key(service_config(ZK).discovery) and len(key) == 16
    assert key != discovery_key(PATH_TYPO.discovery)
    assert key != discovery_key(LABEL_TYPO.discovery)


def test_the_key_is_written_with_the_servers_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    restarted = saved(path, "k-old")
    assert restarted.discovery_key("web") == "k-old"
    own = json.loads(path.read_text())["_synapse"]
    assert own["discovery"]["services"] == {"web": "k-old"}
    assert isinstance(own["discovery"]["timestamp"], int)  # shaped as the reserved entry's
    # a selection not from discovery (the file's own servers) keeps the key they came with
    restarted._key_of = lambda _name: "k-new"
    kept = select_servers(PATH_TYPO, restarted.cached("web"), None, None, ORIGIN_STATE_FILE)
    restarted.update({"web": kept}, ["web"])
    assert json.loads(path.read_text())["_synapse"]["discovery"]["services"] == {"web": "k-old"}


def test_a_file_without_keys_holds_nothing(tmp_path: Path) -> None:
    restarted = saved(tmp_path / "state.json", None)  # (an older synapse's file)
    assert restarted.discovery_key("web") is None
    held, empty = RestartHeld(), Report("web", "zookeeper", ())
    chosen = select_servers(PATH_TYPO, (), None)
    assert held.select("web", Service(PATH_TYPO, empty), chosen, restarted, None) is chosen
    assert held.degraded({"web"}) == []


@pytest.mark.parametrize(
    ("config", "listed"), [(PATH_TYPO, ()), (LABEL_TYPO, tuple(found(3)))], ids=["path", "label"]
)
def test_a_changed_discovery_listing_no_server_serves_the_saved_servers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, config: ServiceConfig, listed: tuple
) -> None:
    restarted = saved(tmp_path / "state.json", discovery_key(OLD.discovery))
    held, service = RestartHeld(), Service(config)
    filters = config.discovery.label_filters
    # before any list: the saved servers, unfiltered (the label typo's filters drop them)
    before = held.select("web", service, select_servers(config, None, None), restarted, None)
    assert [s.port for s in before.servers] == [1, 2] and held.degraded({"web"}) == []

    with caplog.at_level(logging.INFO, logger="synapse.restart_held"):
        for _ in range(2):  # the list: nothing after the filters, whatever use_previous says
            service.report = Report("web", "zookeeper", listed, filters=filters)
            chosen = select_servers(config, listed, None, filters=filters)
            assert not chosen.servers
            selection = held.select("web", service, chosen, restarted, None)
            assert [s.port for s in selection.servers] == [1, 2]
            assert selection.origin == ORIGIN_STATE_FILE
        [said] = held.degraded({"web"})
        assert said == ("web: the discovery changed since the last run and lists no servers; "
                        "serving the 2 servers the previous run saved")  # fmt: skip
        assert held.degraded(set()) == []  # (a SIGHUP removed it)

        # the first list with a server ends it
        listed = (*found(4), *found(5, zone="az-1"))  # (one of them passes either filter)
        service.report = Report("web", "zookeeper", listed, filters=filters)
        chosen = select_servers(config, listed, None, filters=filters)
        assert chosen.servers
        assert held.select("web", service, chosen, restarted, None) is chosen
        assert held.degraded({"web"}) == []
        service.report = Report("web", "zookeeper", (), filters=filters)  # (over for good)
        chosen = select_servers(config, (), None, filters=filters)
        assert held.select("web", service, chosen, restarted, None) is chosen
    said = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert said == [("ERROR", "restart_discovery_held"), ("INFO", "restart_discovery_held_ended")]


def test_the_same_discovery_is_not_held(tmp_path: Path) -> None:
    restarted = saved(tmp_path / "state.json", discovery_key(OLD.discovery))
    held = RestartHeld()
    service = Service(OLD, Report("web", "zookeeper", (), filters=OLD.discovery.label_filters))
    chosen = select_servers(OLD, (), None)
    assert held.select("web", service, chosen, restarted, None) is chosen
    assert isinstance(chosen, Selection) and not chosen.servers  # (its own rules: emptied)
