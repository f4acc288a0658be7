"""glibc malloc settings (smartstack.malloc_tune): what is set, and when not."""

from __future__ import annotations

import sys

import pytest

from smartstack.malloc_tune import (
    ARENA_MAX,
    FLEET_SERVICES,
    M_ARENA_MAX,
    M_MMAP_THRESHOLD,
    M_TRIM_THRESHOLD,
    MMAP_THRESHOLD,
    TRIM_THRESHOLD,
    tune_malloc,
    tune_malloc_for_fleet,
    wanted,
)

ALL = {M_TRIM_THRESHOLD: TRIM_THRESHOLD, M_MMAP_THRESHOLD: MMAP_THRESHOLD, M_ARENA_MAX: ARENA_MAX}


def test_the_operators_glibc_settings_are_left_alone() -> None:
    assert wanted({}) == ALL
    assert wanted({"MALLOC_ARENA_MAX": "4"}).keys() == {M_TRIM_THRESHOLD, M_MMAP_THRESHOLD}
    assert wanted({"MALLOC_MMAP_THRESHOLD_": "65536"}).keys() == {M_TRIM_THRESHOLD, M_ARENA_MAX}
    assert wanted({"MALLOC_TRIM_THRESHOLD_": "1"}).keys() == {M_MMAP_THRESHOLD, M_ARENA_MAX}
    tunables = "glibc.malloc.mmap_threshold=1:glibc.malloc.arena_max=1"
    assert wanted({"GLIBC_TUNABLES": tunables}) == {M_TRIM_THRESHOLD: TRIM_THRESHOLD}
    assert wanted({"GLIBC_TUNABLES": tunables + ":glibc.malloc.trim_threshold=1"}) == {}


def test_a_sidecar_is_not_tuned_and_does_not_import_ctypes() -> None:
    had_ctypes = "ctypes" in sys.modules
    assert tune_malloc_for_fleet(FLEET_SERVICES - 1, {}) == []
    operators = {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1"}
    operators |= {"MALLOC_ARENA_MAX": "1", "MALLOC_MMAP_THRESHOLD_": "1"}
    assert tune_malloc_for_fleet(5000, operators) == []
    assert ("ctypes" in sys.modules) == had_ctypes


def test_a_fleet_and_nerve_get_every_setting_on_glibc() -> None:
    # This test process is glibc-linked (Debian, like every host synapse runs on here);
    # fixed thresholds and two arenas are harmless to it.
    assert sorted(tune_malloc_for_fleet(FLEET_SERVICES, {})) == sorted(ALL)
    assert sorted(tune_malloc({})) == sorted(ALL)  # (nerve's)


def test_a_python_without_ctypes_runs_untuned(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every nerve tunes as it starts: a Python built without _ctypes must not stop it.
    monkeypatch.setitem(sys.modules, "ctypes", None)  # (import ctypes: ImportError)
    assert tune_malloc({}) == []
