"""synapse.haproxy.pids_room: the free pids of synapse's cgroup, read as the kernel exposes
them (v1 ``pids`` hierarchy, v2, a container without its cgroup namespace), and the reload
refused when HAProxy's new worker could not start its threads (review s34: it served nothing,
every request failed until the reload timed out)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from synapse.haproxy.pids_room import nbthread, pids_free, too_little_room


def _group(directory: Path, limit: str, current: int) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "pids.max").write_text(f"{limit}\n")
    (directory / "pids.current").write_text(f"{current}\n")


def _proc(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cgroup"
    path.write_text(text)
    return path


def test_v1_takes_the_tightest_limit_of_the_group_and_those_above(tmp_path: Path) -> None:
    root = tmp_path / "fs"
    _group(root / "pids" / "a" / "b", "100", 40)  # 60 free
    _group(root / "pids" / "a", "50", 47)  # 3 free: this one binds
    _group(root / "pids", "max", 900)
    proc = _proc(tmp_path, "9:name=systemd:/a/b\n8:pids:/a/b\n4:memory:/x\n")
    assert pids_free(proc, root) == (3, 50, root / "pids" / "a")


def test_v2_unified(tmp_path: Path) -> None:
    root = tmp_path / "fs"
    root.mkdir()
    (root / "cgroup.controllers").write_text("cpu pids\n")
    _group(root / "system.slice" / "synapse.service", "64", 60)
    proc = _proc(tmp_path, "0::/system.slice/synapse.service\n")
    assert pids_free(proc, root) == (4, 64, root / "system.slice" / "synapse.service")


def test_a_path_the_mount_does_not_have_finds_the_containers_own_limit(tmp_path: Path) -> None:
    root = tmp_path / "fs"
    _group(root / "pids", "200", 190)  # docker without a cgroup namespace: its own mount
    proc = _proc(tmp_path, "8:pids:/docker/3f2a\n")
    assert pids_free(proc, root) == (10, 200, root / "pids")


def test_no_limit_or_nothing_readable_is_none(tmp_path: Path) -> None:
    root = tmp_path / "fs"
    _group(root / "pids" / "a", "max", 5)
    assert pids_free(_proc(tmp_path, "8:pids:/a\n"), root) is None
    assert pids_free(tmp_path / "missing", root) is None


def test_nbthread_from_the_global_lines_else_one_per_cpu() -> None:
    assert nbthread("global\n    maxconn 256\n    nbthread 4  # four\n") == 4
    assert nbthread("global\n    maxconn 256\n") == len(os.sched_getaffinity(0))


@pytest.mark.parametrize(("free", "short"), [(6, False), (5, True), (0, True), (-3, True)])
def test_the_reload_is_refused_below_the_new_workers_need(free: int, short: bool) -> None:
    error = too_little_room("global\n  nbthread 4\n", (free, 40, Path("/sys/fs/cgroup/pids")))
    assert (error is not None) is short
    if error is not None:
        assert f"{max(free, 0)} processes or threads free under the pids limit 40" in error
        assert "needs 6 (nbthread 4 + 2)" in error and "raise the container's pids.max" in error
    assert too_little_room("nbthread 64", None) is None  # no limit: nothing to say
