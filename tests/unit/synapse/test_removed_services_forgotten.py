"""Soak s45 (pure): what the reconciler keeps per service name goes with a service a SIGHUP
removed. A SIGHUP with a new service name each time (a docker edge's label services, a
renamed service) kept every name ever configured in the restart hold's, the kept previous
lists' and the state file's memos for the process's life."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from applier_fakes import FakeApplier, eventually, make_reconciler, report, running
from test_held_swap_corners import state_config
from test_restart_held import Keys

from synapse import round_outputs
from synapse.config import SynapseConfig
from synapse.state_cache import StateCache


def with_service(base: SynapseConfig, name: str | None) -> SynapseConfig:
    """``base`` plus a service ``name`` with web's settings on its own path."""
    doc: dict[str, Any] = base.model_dump(exclude_unset=True)
    if name is not None:
        web = doc["services"]["web"]
        doc["services"][name] = {**web, "discovery": {**web["discovery"], "path": f"/{name}"}}
    return SynapseConfig.model_validate(doc)


def in_file(path: Path) -> set[str]:
    doc = json.loads(path.read_text())
    return set(doc) | set(doc["_synapse"]["discovery"]["services"])


def forgotten(cache: StateCache) -> bool:
    return set(cache._keys) <= {"web"} and set(cache._stamps) <= {"web"}


async def test_services_a_sighup_removed_leave_nothing_behind(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.INFO)
    monkeypatch.setattr(round_outputs, "STATE_FILE_INTERVAL", 0.05)  # (writes: sooner)
    applier, base = FakeApplier(), state_config(tmp_path)
    rec = make_reconciler(base, applier)
    path = tmp_path / "state.json"
    cache = rec.state_cache = StateCache(path, ttl=86400, key_of=Keys("k"))
    async with running(rec, applier, report("web", "10.0.0.1")):
        for k in range(6):
            name = f"tmp{k}"
            rec.set_config(with_service(base, name))
            rec.report(report(name, "10.0.0.2"))
            await eventually(lambda n=name: n in in_file(path), what="written")
            rec.report(report(name))  # every instance withdrawn: its previous list kept
            await eventually(lambda n=name: n in rec.previous_kept.since, what="kept")
            rec.set_config(base)  # removed
            await eventually(lambda n=name: n not in in_file(path), what="written without")
            assert rec.previous_kept.since == {} and rec.restart_held._seen <= {"web"}
            # (the memos go just after the write, in its thread: the file can be read first)
            await eventually(lambda: forgotten(cache), what="memos of the removed gone")
    ended = [r.getMessage() for r in caplog.records if "kept_ended" in r.getMessage()]
    assert len(ended) == 6  # (each removal ends its kept list: said)
