"""The state file against a stepped wall clock (pure, injected wall clock, boottime and boot
id: synapse.state_clock). Within one boot an entry's age is taken on boottime; after a
reboot on the wall clock, a stamp ahead of it counted as made at the load; a step while
synapse runs moves the stamps it made and writes the file at once."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from applier_fakes import FakeApplier, eventually, report
from prometheus_client import CollectorRegistry
from synapse_testlib import service_config

from smartstack.boot_clock import WallStep
from smartstack.record import Registration
from synapse.config import SynapseConfig
from synapse.metrics import SynapseMetrics
from synapse.model import Found
from synapse.reconciler import Reconciler
from synapse.selection import select_servers
from synapse.state_cache import StateCache
from synapse.state_recheck import watch_wall_clock

TTL = 3600.0
DAY = 86400.0
ZK = {"method": "zookeeper", "hosts": ["127.0.0.1:2181"], "path": "/nerve/web"}


class Host:
    """The injected clocks: ``wall`` (steps), ``boot`` (never steps), the boot's id."""

    def __init__(self) -> None:
        self.wall, self.boot, self.id = 1_700_000_000.0, 5_000.0, "boot-1"

    def passes(self, seconds: float) -> None:
        self.wall += seconds
        self.boot += seconds

    def reboot(self) -> None:
        self.boot, self.id = 30.0, "boot-2"

    def cache(self, path: Path) -> StateCache:
        return StateCache(path, TTL, lambda: self.wall, lambda: self.boot, lambda: self.id)


def written(host: Host, path: Path, *ports: int) -> None:
    """A synapse that discovered ``ports`` for ``web`` wrote the file now."""
    found = [Found(Registration(host="10.0.0.1", port=p, name=f"s{p}"), f"zk:{p}") for p in ports]
    assert host.cache(path).update(
        {"web": select_servers(service_config(ZK), found, None)}, ["web"]
    )


def served(cache: StateCache) -> list[int]:
    return sorted(f.registration.port for f in cache.cached("web") or [])


def loaded(host: Host, path: Path) -> StateCache:
    cache = host.cache(path)
    cache.load()
    return cache


def test_a_restart_in_the_same_boot_times_the_file_on_boottime(tmp_path: Path) -> None:
    host, path = Host(), tmp_path / "state.json"
    written(host, path, 1)
    host.passes(10)
    host.wall += 2 * TTL  # the clock stepped ahead while synapse was stopped
    assert served(loaded(host, path)) == [1], "a 10-s-old file is not distrusted"
    host.wall -= 3 * DAY  # ... or behind: a file past the TTL on boottime is not trusted
    host.passes(TTL + 1)
    assert served(loaded(host, path)) == []


def test_after_a_reboot_the_wall_clock_rules_and_a_stamp_ahead_counts_as_made_now(
    tmp_path: Path,
) -> None:
    host, path = Host(), tmp_path / "state.json"
    host.wall += DAY  # synapse ran with the clock a day ahead
    written(host, path, 1)
    host.reboot()
    host.wall -= DAY  # ... the host rebooted with a true clock
    cache = loaded(host, path)
    assert served(cache) == [1]
    host.passes(TTL + 1)
    assert served(cache) == [], "trusted for the TTL from the load, not the lead + the TTL"
    host2, path2 = Host(), tmp_path / "other.json"
    written(host2, path2, 2)
    host2.reboot()
    host2.wall += TTL + 10  # an RTC ahead at boot: the policy stands (no stale servers)
    assert served(loaded(host2, path2)) == []


def test_a_file_without_the_clock_record_is_read_as_before(tmp_path: Path) -> None:
    host, path = Host(), tmp_path / "state.json"
    entry = {"timestamp": int(host.wall) - 10, "host": "10.0.0.1", "port": 1, "name": "s1"}
    path.write_text(json.dumps({"web": {"s1_10.0.0.1:1": entry}}))  # an older release's
    assert served(loaded(host, path)) == [1]
    host.wall += TTL
    assert served(loaded(host, path)) == []


def test_a_step_while_running_moves_this_boots_stamps_and_writes_the_file(tmp_path: Path) -> None:
    host, path = Host(), tmp_path / "state.json"
    host.wall -= 2 * DAY  # synapse runs with the clock 2 days behind
    written(host, path, 1)
    cache = loaded(host, path)
    host.wall += 2 * DAY  # NTP corrects it
    assert cache.clock_stepped()
    stamp = json.loads(path.read_text())["web"]["s1_10.0.0.1:1"]["timestamp"]
    assert abs(stamp - host.wall) < 2, "re-stamped at once"
    host.reboot()  # a reboot now: the wall clock's rule finds a fresh file
    assert served(loaded(host, path)) == [1]


def test_another_boots_stamps_are_not_moved_by_the_correction(tmp_path: Path) -> None:
    host, path = Host(), tmp_path / "state.json"
    written(host, path, 1)
    host.reboot()
    host.passes(10)
    host.wall += 2 * DAY  # an RTC 2 days ahead at boot: too old to serve
    cache = loaded(host, path)
    assert served(cache) == []
    host.wall -= 2 * DAY  # NTP syncs
    cache.clock_stepped()
    assert served(cache) == [1], "the true clock finds them fresh"


def test_an_earlier_boots_stamps_stay_its_own_across_a_restart(tmp_path: Path) -> None:
    """Written again in this boot (the registry still silent), they are not taken for
    this boot's stamps: a restart before NTP syncs, then the correction, serves them."""
    host, path = Host(), tmp_path / "state.json"
    written(host, path, 1)
    host.reboot()
    host.passes(10)
    host.wall += 2 * DAY
    cache = loaded(host, path)
    assert cache.refresh({}, ["web"])  # rewritten in this boot
    host.passes(5)
    again = loaded(host, path)  # synapse restarted, the clock still ahead
    assert served(again) == []
    host.wall -= 2 * DAY
    again.clock_stepped()
    assert served(again) == [1]


def test_an_update_after_the_clock_stepped_back_stamps_again(tmp_path: Path) -> None:
    host, path = Host(), tmp_path / "state.json"
    cache = host.cache(path)
    found = [Found(Registration(host="10.0.0.1", port=1, name="s1"), "zk:1")]
    selection = select_servers(service_config(ZK), found, None)
    assert cache.update({"web": selection}, ["web"])
    host.wall -= DAY
    host.passes(60)
    assert cache.refresh({"web": selection}, ["web"]), "not a day late"


async def test_a_silent_service_left_empty_is_served_once_the_clock_is_corrected(
    tmp_path: Path,
) -> None:
    """A reboot with the registry down and the clock ahead: nothing to serve; the clock
    corrected, the wall clock watcher moves nothing (another boot's stamps) and the
    reconciler serves the file's servers again, without a registry answer."""
    host, path = Host(), tmp_path / "state.json"
    written(host, path, 1)
    host.reboot()
    host.passes(10)
    host.wall += 2 * DAY
    services = {
        name: {"discovery": {"method": "zookeeper", "hosts": ["h:1"], "path": f"/{name}"}}
        for name in ("web", "api")
    }
    config = SynapseConfig.model_validate({
        "services": services, "startup_wait": 0.1,
        "haproxy": {"config_file_path": str(tmp_path / "haproxy.cfg"), "reload_command": "true",
                    "state_file_path": str(path), "state_file_ttl": TTL},
    })  # fmt: skip
    cache = loaded(host, path)
    applier = FakeApplier()
    rec = Reconciler(config, applier, SynapseMetrics(CollectorRegistry()), cache)
    task = asyncio.create_task(rec.run())
    clock = asyncio.create_task(
        watch_wall_clock(rec, 0.02, WallStep(lambda: host.wall, lambda: host.boot))
    )
    try:
        rec.report(report("api", "10.0.0.9"))  # (another service: its rounds go on)
        await eventually(lambda: applier.applied, what="the first hand-over")
        assert applier.hosts("web") == []
        rec.report(report("api", "10.0.0.8"))
        await eventually(lambda: applier.hosts("api") == ["10.0.0.8"], what="a round")
        assert applier.hosts("web") == [], "still too old"
        host.wall -= 2 * DAY  # NTP syncs
        await eventually(lambda: applier.hosts("web") == ["10.0.0.1"], what="served again")
        assert rec.selections()["web"].origin == "state_file"
    finally:
        clock.cancel()
        task.cancel()
        await asyncio.gather(task, clock, return_exceptions=True)
