"""Which file each daemon's instance lock is (smartstack.instance_lock): pure path logic.

nerve's lock was ``<state_dir>/nerve.lock``: two configs in one directory (the default
state_dir, different services) locked one file and the second exited 1 (review s27). synapse's
lock went by the name only: a config naming a symlink and one naming its target got two lock
files and ran side by side.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from smartstack.instance_lock import nerve_lock_paths, synapse_lock_paths
from synapse.atomic import write_atomic


def _shared(state: Path, first: str, second: str) -> set[Path]:
    """The lock files two nerve copies both take: empty, they run side by side."""
    return set(nerve_lock_paths(state, first)) & set(nerve_lock_paths(state, second))


def test_two_nerve_configs_in_one_state_dir_each_have_their_own_lock(tmp_path: Path) -> None:
    state = tmp_path / "nerve-state"
    a = nerve_lock_paths(state, str(tmp_path / "a.json"))
    b = nerve_lock_paths(state, str(tmp_path / "b.json"))
    assert not set(a) & set(b) and {p.parent for p in a + b} == {state}
    assert {p.name[:8] for p in a} == {"nerve-a-"} and {p.name[:8] for p in b} == {"nerve-b-"}


def test_two_nerve_configs_of_one_name_in_two_directories_have_their_own_lock(
    tmp_path: Path,
) -> None:
    # one explicit state_dir (examples/systemd/nerve.yaml has an absolute one); before, both
    # were <state_dir>/nerve.json.lock
    state = tmp_path / "state"
    assert not _shared(state, str(tmp_path / "web" / "nerve.json"),
                       str(tmp_path / "api" / "nerve.json"))  # fmt: skip


@pytest.mark.parametrize("config", ["nerve.json", "web.yaml", "x.lock.json", "svc"])
def test_a_nerve_lock_never_looks_like_a_maintenance_flag(tmp_path: Path, config: str) -> None:
    # state_dir's *.json files are maintenance flags (nerve.maintenance lists them)
    assert all(p.suffix == ".lock" for p in nerve_lock_paths(tmp_path, str(tmp_path / config)))


def test_one_nerve_config_by_any_name_shares_a_lock(tmp_path: Path, monkeypatch) -> None:
    real = tmp_path / "conf" / "nerve.json"
    real.parent.mkdir()
    real.write_text("{}")
    (tmp_path / "current.json").symlink_to(real)
    (tmp_path / "linked").symlink_to(real.parent, target_is_directory=True)
    monkeypatch.chdir(real.parent)
    state = tmp_path / "state"
    names = [str(real), str(tmp_path / "current.json"), str(tmp_path / "linked" / "nerve.json"),
             "nerve.json", "./nerve.json"]  # fmt: skip
    shared = set.intersection(*(set(nerve_lock_paths(state, name)) for name in names))
    assert len(shared) == 1 and next(iter(shared)).name.startswith("nerve-nerve-")


def test_a_config_link_flipped_to_another_release_shares_a_lock(tmp_path: Path) -> None:
    # nerve.json -> releases/nerve-v1.json, flipped to v2 between two starts: two real
    # paths, one name (before: two locks, both nerves ran and lost the registration)
    (tmp_path / "releases").mkdir()
    link = tmp_path / "nerve.json"
    state = tmp_path / "nerve-state"
    before = []
    for version in ("v1", "v2"):
        (tmp_path / "releases" / f"nerve-{version}.json").write_text("{}")
        link.unlink(missing_ok=True)
        link.symlink_to(f"releases/nerve-{version}.json")
        before.append(set(nerve_lock_paths(state, str(link))))
    assert len(before[0] & before[1]) == 1
    assert sorted(nerve_lock_paths(state, str(link))) == nerve_lock_paths(state, str(link))


def _synapse(config_file_path: str | None = None, state_file_path: str | None = None,
             output: str | None = None, writes: bool = True) -> SimpleNamespace:  # fmt: skip
    hap = SimpleNamespace(config_file_path=config_file_path, do_writes=writes, managed=None,
                          state_file_path=state_file_path)  # fmt: skip
    out = SimpleNamespace(output_directory=output) if output else None
    return SimpleNamespace(haproxy=hap, file_output=out)


def test_synapse_locks_beside_the_file_it_writes(tmp_path: Path) -> None:
    cfg = str(tmp_path / "haproxy.cfg")
    assert synapse_lock_paths(_synapse(cfg)) == ([Path(f"{cfg}.lock")], "config_file_path")
    state = str(tmp_path / "state.json")
    assert synapse_lock_paths(_synapse(cfg, state, writes=False)) == (
        [Path(f"{state}.lock")], "haproxy.state_file_path")  # fmt: skip
    out = _synapse(output=str(tmp_path / "out"), writes=False)
    assert synapse_lock_paths(out) == ([tmp_path / "out" / "synapse.lock"],
                                       "file_output.output_directory")  # fmt: skip
    assert synapse_lock_paths(SimpleNamespace(haproxy=None, file_output=None)) is None


def _linked(tmp_path: Path) -> tuple[Path, Path]:
    """haproxy.cfg, and current.cfg a symlink to it."""
    real = tmp_path / "haproxy.cfg"
    real.write_text("global\n")
    link = tmp_path / "current.cfg"
    link.symlink_to(real)
    return real, link


def test_a_symlinked_config_file_path_locks_its_target_too(tmp_path: Path) -> None:
    real, link = _linked(tmp_path)
    via_link, _ = synapse_lock_paths(_synapse(str(link))) or ([], "")
    via_real, _ = synapse_lock_paths(_synapse(str(real))) or ([], "")
    assert via_link == [tmp_path / "current.cfg.lock", tmp_path / "haproxy.cfg.lock"]
    assert set(via_real) <= set(via_link)  # the two copies meet on the target's lock


def test_after_synapse_wrote_over_its_link_one_config_still_meets_itself(tmp_path: Path) -> None:
    # synapse writes by rename: the link becomes a file. A second copy of the same config
    # then sees no link; it must still meet the first on the lock the first took by name.
    _, link = _linked(tmp_path)
    first, _ = synapse_lock_paths(_synapse(str(link))) or ([], "")
    write_atomic(link, "global\n")
    assert not os.path.islink(link)
    second, _ = synapse_lock_paths(_synapse(str(link))) or ([], "")
    assert second[0] == first[0] == tmp_path / "current.cfg.lock"
