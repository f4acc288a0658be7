"""A service a SIGHUP adds waits for its watcher's first report, as at a start.

Handed over at once with nothing (no report yet, no default_servers, nothing in the state
file), its frontend was bound by the reload and answered 503 until the registry answered
(or, for servers only a reload can add, restart_interval later). It now stays out of the
desired state until its first report or ``startup_wait``; then, as at a start, from the
state file or its default_servers, or empty.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from applier_fakes import FakeApplier, eventually, make_reconciler, report, running

from synapse.config import SynapseConfig
from synapse.daemon_parts import make_state_cache

OLD = {"discovery": {"method": "zookeeper", "hosts": ["h:1"], "path": "/old"},
       "haproxy": {"port": 3000}}  # fmt: skip
NEW = {"discovery": {"method": "zookeeper", "hosts": ["h:1"], "path": "/new"},
       "haproxy": {"port": 3001}}  # fmt: skip


def config(tmp_path: Path, wait: float, **services: Any) -> SynapseConfig:
    return SynapseConfig.model_validate({
        "services": {"old": OLD, **services},
        "haproxy": {
            "config_file_path": str(tmp_path / "haproxy.cfg"),
            "reload_command": "true",
            "state_file_path": str(tmp_path / "state.json"),
        },
        "startup_wait": wait,
    })  # fmt: skip


def names(applier: FakeApplier, index: int = -1) -> set[str]:
    return {d.name for d in applier.applied[index]}


async def test_a_new_service_is_handed_over_with_its_first_report_not_before(
    tmp_path: Path,
) -> None:
    """Those with something to start from come at once: default_servers, or servers of
    the state file (here one the SIGHUP points to); a rename is test_synapse_keeps_servers'."""
    entry = {"timestamp": int(time.time()), "host": "10.0.0.7", "port": 80, "name": "n"}
    (tmp_path / "other.json").write_text(json.dumps({"back": {"n_10.0.0.7:80": entry}}))
    defaults = {**NEW, "default_servers": [{"name": "d", "host": "10.0.0.8", "port": 80}],
                "haproxy": {"port": 3002}}  # fmt: skip
    back = {**NEW, "haproxy": {"port": 3003}}
    applier = FakeApplier()
    rec = make_reconciler(config(tmp_path, 30.0), applier)
    async with running(rec, applier, report("old", "10.0.0.1")):
        new = config(tmp_path, 30.0, new=NEW, defaults=defaults, back=back)
        assert new.haproxy is not None
        new.haproxy.state_file_path = str(tmp_path / "other.json")
        rec.set_config(new)
        rec.state_cache = make_state_cache(new)  # (as the daemon does, after set_config)
        await eventually(lambda: len(applier.applied) == 2, what="the SIGHUP's hand-over")
        assert names(applier) == {"old", "defaults", "back"}, "none before its registry answered"
        assert (applier.hosts("defaults"), applier.hosts("back")) == (["10.0.0.8"], ["10.0.0.7"])
        rec.report(report("new", "10.0.0.9"))
        await eventually(lambda: "new" in names(applier), what="the first report's hand-over")
        assert applier.hosts("new") == ["10.0.0.9"]
        handed = [applier.hosts("new", i) for i in range(len(applier.applied))
                  if "new" in names(applier, i)]  # fmt: skip
        assert all(handed), f"never handed over empty: {handed}"


async def test_a_new_service_never_reported_comes_after_startup_wait_as_at_a_start(
    tmp_path: Path,
) -> None:
    applier = FakeApplier()
    rec = make_reconciler(config(tmp_path, 1.0), applier)
    async with running(rec, applier, report("old", "10.0.0.1")):
        added = time.monotonic()
        rec.set_config(config(tmp_path, 1.0, new=NEW))
        await eventually(lambda: len(applier.applied) >= 2, what="the SIGHUP's hand-over")
        assert "new" not in names(applier, 1)
        await eventually(lambda: "new" in names(applier), what="the hand-over after the wait")
        assert time.monotonic() - added >= 1.0
        assert applier.hosts("new") == []  # (nothing known: empty, as at a start)


async def test_a_new_services_report_ends_its_wait(tmp_path: Path) -> None:
    """Its timer goes with the report: left, it would select the service once more when
    startup_wait passed, a round for nothing."""
    applier = FakeApplier()
    rec = make_reconciler(config(tmp_path, 30.0), applier)
    async with running(rec, applier, report("old", "10.0.0.1")):
        rec.set_config(config(tmp_path, 30.0, new=NEW))
        assert "new" in rec._arrivals._timers
        rec.report(report("new", "10.0.0.9"))
        assert "new" not in rec._arrivals._timers
        await eventually(lambda: "new" in names(applier), what="the report's hand-over")
