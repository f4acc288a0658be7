"""The state file costs what changed: a start writes it in slices, a change rebuilds one
service, an unchanged selection (the very object) is not looked at again."""

from __future__ import annotations

import json
from pathlib import Path

from smartstack.record import Registration
from synapse.model import Server
from synapse.selection import ORIGIN_DISCOVERY, Selection
from synapse.state_cache import REBUILD_BUDGET, StateCache


def selection(service: int, servers: int = 2) -> Selection:
    regs = [
        Registration(host=f"10.0.{service % 250}.{i}", port=80, name=f"s{service}")
        for i in range(servers)
    ]
    return Selection(
        tuple(Server.from_registration(r, "zk:/x") for r in regs), tuple(regs), ORIGIN_DISCOVERY
    )


def on_disk(path: Path) -> dict:
    """The file's services (the reserved key, synapse's own: left out)."""
    return {k: v for k, v in json.loads(path.read_text()).items() if k != "_synapse"}


def test_a_start_writes_the_file_in_slices_and_a_final_write_all_of_it(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    cache = StateCache(path, 3600, clock=lambda: 1_000_000.0)
    selections = {f"svc{i}": selection(i) for i in range(REBUILD_BUDGET * 2 + 50)}
    names = list(selections)
    assert cache.update(selections, names) and cache.pending
    assert len(on_disk(path)) == REBUILD_BUDGET
    assert cache.update(selections, names) and cache.pending
    assert len(on_disk(path)) == REBUILD_BUDGET * 2
    assert cache.update(selections, names) and not cache.pending
    assert len(on_disk(path)) == len(selections)
    assert not cache.update(selections, names), "nothing changed: nothing written"
    # One service changes: only it is rebuilt; the rest of the file stays as it was.
    before = on_disk(path)
    selections["svc7"] = selection(7, servers=3)
    assert cache.update(selections, names) and not cache.pending
    after = on_disk(path)
    assert len(after["svc7"]) == 3 and {k: v for k, v in after.items() if k != "svc7"} == {
        k: v for k, v in before.items() if k != "svc7"
    }
    # A cache loaded from the file reads every service back; unbudgeted, one write does all.
    again = StateCache(path, 3600, clock=lambda: 1_000_000.0)
    again.load()
    assert again.cached("svc7") is not None and len(again.cached("svc7") or []) == 3
    fresh = StateCache(tmp_path / "other.json", 3600, clock=lambda: 1_000_000.0)
    assert fresh.update(selections, names, budget=None) and not fresh.pending
    assert len(on_disk(tmp_path / "other.json")) == len(selections)
