"""Review s28, the corners of held swaps (pure): a hold's start has the state file say
``held_for`` within a second (a kill -9 before the next refresh restarted from the typo
alone)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from applier_fakes import FakeApplier, eventually, make_reconciler, report, running
from test_restart_held import Keys
from test_watcher_swap import FakeWatcher, service

from synapse.config import ServiceConfig, SynapseConfig
from synapse.model import Sink
from synapse.round_outputs import STATE_FILE_INTERVAL
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
