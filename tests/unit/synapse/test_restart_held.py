"""Review s27/cr2 (pure): the state file records the discovery its servers came from, and a
start whose config's discovery differs and lists no server serves them as they were served
(synapse.restart_held), not through the new config's label_filters or
use_previous_backends."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import pytest
from synapse_testlib import service_config

from smartstack.logs import _FIELDS as FIELDS
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


@dataclass
class Keys:
    """The daemon's ListingKeys: the running watcher's key, and a held swap's."""

    listing: str | None
    held: str | None = None

    def __call__(self, _name: str) -> dict[str, str] | None:
        return {"listing": self.listing} if self.listing is not None else None

    def held_for(self, _name: str) -> str | None:
        return self.held


def saved(path: Path, key: str | None, held: str | None = None) -> StateCache:
    """A state file an earlier run wrote (web: s1, s2, listed by the discovery ``key``, a
    SIGHUP's swap to the discovery ``held`` held), read back by a restarted synapse."""
    cache = StateCache(path, ttl=3600, key_of=Keys(key, held))
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
    assert restarted.discovery_key("web") == {"listing": "k-old"}
    own = json.loads(path.read_text())["_synapse"]
    assert own["discovery"]["services"] == {"web": {"listing": "k-old"}}
    assert isinstance(own["discovery"]["timestamp"], int)  # shaped as the reserved entry's
    # a selection not from discovery (the file's own servers) keeps the key they came with
    restarted._key_of = Keys("k-new")
    kept = select_servers(PATH_TYPO, restarted.cached("web"), None, None, ORIGIN_STATE_FILE)
    restarted.update({"web": kept}, ["web"])
    services = json.loads(path.read_text())["_synapse"]["discovery"]["services"]
    assert services == {"web": {"listing": "k-old"}}


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
    restarted = saved(tmp_path / "state.json", discovery_key(OLD.discovery), key_of(config))
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


def test_tuning_and_credentials_are_not_in_the_key() -> None:
    """Review s27/cr4: start_jitter 0 -> 0.1 plus a restart held a withdrawn fleet."""
    key = discovery_key(OLD.discovery)
    tuned = {**ZK, "start_jitter": 0.1, "relist_jitter": 5, "polling_interval_sec": 5,
             "retry_policy": {"max_tries": 3}, "zk_auth": {"scheme": "digest",
             "credential": "u:secret"}}  # fmt: skip
    assert discovery_key(service_config(tuned).discovery) == key
    etcd = {"method": "etcd", "endpoints": ["http://127.0.0.1:2379"], "path": "/nerve/web"}
    secret = {**etcd, "etcd_user": "u", "etcd_password": "p", "etcd_transport": "json"}
    assert discovery_key(service_config(etcd).discovery) == key_of(secret)
    assert key_of({**etcd, "path": "/nerve/wbe"}) != key_of(etcd)


def key_of(discovery: dict | ServiceConfig) -> str:
    config = discovery if isinstance(discovery, ServiceConfig) else service_config(discovery)
    return discovery_key(config.discovery)


def test_a_tuning_change_at_a_restart_holds_nothing(tmp_path: Path) -> None:
    restarted = saved(tmp_path / "state.json", discovery_key(OLD.discovery))
    jitter = service_config({**ZK, "start_jitter": 0.1}, use_previous_backends=False)
    service = Service(jitter, Report("web", "zookeeper", (), filters=AZ))
    chosen = select_servers(jitter, (), None, filters=AZ)
    assert RestartHeld().select("web", service, chosen, restarted, None) is chosen


def test_a_key_in_the_earlier_format_holds_nothing(tmp_path: Path) -> None:
    """af3ea5c wrote a bare digest of every setting: unknown, so nothing is held."""
    path = tmp_path / "state.json"
    saved(path, discovery_key(OLD.discovery))
    doc = json.loads(path.read_text())
    doc["_synapse"]["discovery"]["services"]["web"] = discovery_key(PATH_TYPO.discovery)
    path.write_text(json.dumps(doc))
    restarted = StateCache(path, ttl=3600)
    restarted.load()
    assert restarted.cached("web") and restarted.discovery_key("web") is None
    service = Service(PATH_TYPO, Report("web", "zookeeper", (), filters=AZ))
    chosen = select_servers(PATH_TYPO, (), None, filters=AZ)
    assert RestartHeld().select("web", service, chosen, restarted, None) is chosen


def test_the_hold_ends_at_the_saved_servers_ttl_without_a_report(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Review s27/cr4: an empty path sends no report; the hold outlived state_file_ttl."""
    path = tmp_path / "state.json"
    saved(path, discovery_key(OLD.discovery), key_of(PATH_TYPO))
    restarted = StateCache(path, ttl=2.0)  # (the saved servers are 1-2 s from too old)
    restarted.load()
    due: list[str] = []
    held = RestartHeld(due.append)
    service = Service(PATH_TYPO, Report("web", "zookeeper", (), filters=AZ))

    async def run() -> None:
        chosen = select_servers(PATH_TYPO, (), None, filters=AZ)
        assert held.select("web", service, chosen, restarted, None).servers
        assert held.degraded({"web"}) and not due
        await asyncio.sleep(3.0)  # (no report meanwhile)

    with caplog.at_level(logging.INFO, logger="synapse.restart_held"):
        asyncio.run(run())
    assert due == ["web"] and held.degraded({"web"}) == []
    [ended] = [r for r in caplog.records if r.getMessage() == "restart_discovery_held_ended"]
    assert "state_file_ttl" in str(ended.__dict__)
    chosen = select_servers(PATH_TYPO, (), None, filters=AZ)
    assert held.select("web", service, chosen, restarted, None) is chosen


def test_a_changed_discovery_without_a_held_swap_holds_nothing(tmp_path: Path) -> None:
    """Review s27/cr4: an ordinary change (a new path) while every instance was withdrawn:
    the config's rules (here 503), not the saved servers."""
    restarted = saved(tmp_path / "state.json", discovery_key(OLD.discovery))
    service = Service(PATH_TYPO, Report("web", "zookeeper", (), filters=AZ))
    chosen = select_servers(PATH_TYPO, (), None, filters=AZ)
    assert RestartHeld().select("web", service, chosen, restarted, None) is chosen
    # held for another discovery than the config's: nothing either
    restarted = saved(tmp_path / "other.json", discovery_key(OLD.discovery), "0" * 16)
    assert RestartHeld().select("web", service, chosen, restarted, None) is chosen


def test_a_swap_held_is_written_though_the_servers_are_the_same(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    keys = Keys("k-old")
    cache = StateCache(path, ttl=3600, key_of=keys)
    selection = select_servers(OLD, found(1, 2), None)
    assert cache.update({"web": selection}, ["web"])
    assert not cache.update({"web": selection}, ["web"])  # (nothing moved)
    keys.held = "k-typo"  # a SIGHUP's swap is held
    assert cache.update({"web": selection}, ["web"])
    record = {"listing": "k-old", "held_for": "k-typo"}
    assert json.loads(path.read_text())["_synapse"]["discovery"]["services"] == {"web": record}
    assert not cache.update({"web": selection}, ["web"])
    keys.held = None  # (the SIGHUP reverted: said on until the servers are listed again)
    assert cache.discovery_key("web") == record
    keys.listing = "k-typo"  # the swap completed: its list is the servers now
    assert cache.update({"web": select_servers(OLD, found(3), None)}, ["web"])
    services = json.loads(path.read_text())["_synapse"]["discovery"]["services"]
    assert services == {"web": {"listing": "k-typo"}}


def test_a_held_service_a_sighup_removed_is_forgotten(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # soak s45: its name stayed in ``_seen`` (and a hold in ``held``) for the process's life
    restarted = saved(tmp_path / "state.json", discovery_key(OLD.discovery), key_of(PATH_TYPO))
    held, empty = RestartHeld(), Report("web", "zookeeper", ())
    chosen = select_servers(PATH_TYPO, (), None)
    assert held.select("web", Service(PATH_TYPO, empty), chosen, restarted, None) is not chosen
    assert held.held == {"web": 2}
    held.retain({"web"})
    assert held.held == {"web": 2}  # (still configured: held on)
    with caplog.at_level(logging.INFO, logger="synapse.restart_held"):
        held.retain(set())
    assert held.held == {} and held._seen == set()
    [ended] = [r for r in caplog.records if r.getMessage() == "restart_discovery_held_ended"]
    assert getattr(ended, FIELDS)["reason"] == "the service left the config"
