"""Runtime evacuations survive a restart (docs/zone-routing.md): an evacuation the state
file cannot keep runs and is written once it can be, a SIGHUP that moves the state file
carries them over, and a state-file update racing the API's write cannot put the old ones
back. Pure: no process.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from applier_fakes import FakeApplier, eventually, make_reconciler, running

from synapse import round_outputs as round_outputs_module
from synapse import state_cache as state_cache_module
from synapse.config import SynapseConfig
from synapse.daemon import SynapseDaemon
from synapse.daemon_parts import make_state_cache
from synapse.reconciler import Reconciler
from synapse.state_cache import StateCache
from synapse.zone_apply import evacuation_applier
from synapse.zone_state import Evacuations

from test_zone_apply import config, fleet_report, zone_total  # isort: skip

AZ1 = Evacuations().evacuate("az1")


def saved(path: Path) -> Evacuations:
    cache = StateCache(path, 60)
    cache.load()
    return cache.evacuations


async def test_an_evacuation_the_state_file_cannot_keep_runs_and_is_written_later(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full or read-only disk (the incident the operator evacuates for) must not block
    the evacuation: it runs, ``persisted`` is False with a warning, and the reconciler's
    state-file writes, retried while they fail, keep it once the disk is back."""
    monkeypatch.setattr(round_outputs_module, "STATE_FILE_INTERVAL", 0.05)
    applier = FakeApplier()
    path = tmp_path / "state.json"
    path.mkdir()  # the state file's path is a directory: no write
    rec = make_reconciler(config(tmp_path), applier)
    async with running(rec, applier, fleet_report(), fleet_report("plain", az9=1)):
        apply = evacuation_applier(rec, applier, lambda: rec.state_cache)
        _, persisted = await apply(AZ1)
        assert not persisted and "zone_change_not_persisted" in caplog.messages
        assert rec.zones.evacuations == AZ1
        await eventually(lambda: zone_total(applier.applied[-1], "az1") == 0, what="applied")
        path.rmdir()  # the disk is back
        await eventually(lambda: path.is_file() and saved(path) == AZ1, what="written later")
        assert rec.state_cache is not None and not rec.state_cache.evacuations_unsaved


async def test_a_sighup_moving_the_state_file_carries_the_evacuations(tmp_path: Path) -> None:
    def with_state(name: str) -> SynapseConfig:
        return SynapseConfig.model_validate({
            "services": {}, "admin": {"port": None},
            "haproxy": {"config_file_path": str(tmp_path / "haproxy.cfg"),
                        "reload_command": "true", "state_file_path": str(tmp_path / name)},
        })  # fmt: skip

    first = with_state("a.json")
    daemon = SynapseDaemon(first)
    daemon.reconciler = Reconciler(first, None, daemon.metrics, make_state_cache(first))
    daemon.reconciler.zones.evacuations = AZ1
    assert daemon.reconciler.state_cache is not None
    daemon.reconciler.state_cache.save_evacuations(AZ1)
    await daemon.apply_config(with_state("b.json"))
    assert saved(tmp_path / "b.json") == AZ1, "a restart from the new file keeps them"
    assert daemon.reconciler.state_cache.evacuations == AZ1


def test_an_update_racing_the_apis_write_cannot_put_the_old_evacuations_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reconciler's update and the API's save_evacuations run in threads: the update
    that read the old evacuations must not be the last to write."""
    path = tmp_path / "state.json"
    cache = StateCache(path, 60)
    real = state_cache_module.write_atomic
    inside, release = threading.Event(), threading.Event()

    def slow_first(target: Path, text: str) -> None:
        if not inside.is_set():  # the update's write: its text is built, it is slow
            inside.set()
            release.wait(5)
        real(target, text)

    monkeypatch.setattr(state_cache_module, "write_atomic", slow_first)
    update = threading.Thread(target=cache._write, args=({}, 0.0))
    update.start()
    assert inside.wait(5)
    save = threading.Thread(target=cache.save_evacuations, args=(AZ1,))
    save.start()
    save.join(0.2)  # it waits for the update's write (on the old code it is done now)
    release.set()
    update.join(5)
    save.join(5)
    assert saved(path) == AZ1


async def test_the_state_writer_ends_when_a_sighup_removes_the_state_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An evacuation the disk cannot keep keeps the writer retrying; a SIGHUP that removes
    state_file_path (no state file at all in the Airbnb modes) must end it, not leave it
    looping without ever yielding (review: synapse spun at 100 %, deaf to /status and to
    SIGTERM)."""
    import asyncio

    monkeypatch.setattr(round_outputs_module, "STATE_FILE_INTERVAL", 0.05)
    applier = FakeApplier()
    path = tmp_path / "state.json"
    path.mkdir()  # no write
    rec = make_reconciler(config(tmp_path), applier)
    async with running(rec, applier, fleet_report(), fleet_report("plain", az9=1)):
        apply = evacuation_applier(rec, applier, lambda: rec.state_cache)
        assert (await apply(AZ1))[1] is False
        await eventually(lambda: rec.outputs.task is not None, what="the writer retrying")
        rec.state_cache = None  # what the SIGHUP does (daemon.apply_config)
        task = rec.outputs.task
        assert task is not None
        await asyncio.wait_for(asyncio.shield(task), 2)  # ended (the old code: never)
