"""glibc malloc settings for fleets (smartstack.malloc_tune): what is set, and when not."""

from __future__ import annotations

import sys

from smartstack.malloc_tune import (
    ARENA_MAX,
    FLEET_SERVICES,
    M_ARENA_MAX,
    M_MMAP_THRESHOLD,
    MMAP_THRESHOLD,
    tune_malloc,
    wanted,
)


def test_the_operators_glibc_settings_are_left_alone() -> None:
    assert wanted({}) == {M_MMAP_THRESHOLD: MMAP_THRESHOLD, M_ARENA_MAX: ARENA_MAX}
    assert wanted({"MALLOC_ARENA_MAX": "4"}) == {M_MMAP_THRESHOLD: MMAP_THRESHOLD}
    assert wanted({"MALLOC_MMAP_THRESHOLD_": "65536"}) == {M_ARENA_MAX: ARENA_MAX}
    assert (
        wanted({"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=1:glibc.malloc.arena_max=1"}) == {}
    )


def test_a_sidecar_is_not_tuned_and_does_not_import_ctypes() -> None:
    had_ctypes = "ctypes" in sys.modules
    assert tune_malloc(FLEET_SERVICES - 1, {}) == []
    assert tune_malloc(5000, {"MALLOC_ARENA_MAX": "1", "MALLOC_MMAP_THRESHOLD_": "1"}) == []
    assert ("ctypes" in sys.modules) == had_ctypes


def test_a_fleet_gets_both_settings_on_glibc() -> None:
    # This test process is glibc-linked (Debian, like every host synapse runs on here);
    # a fixed mmap threshold and two arenas are harmless to it.
    assert sorted(tune_malloc(FLEET_SERVICES, {})) == sorted([M_MMAP_THRESHOLD, M_ARENA_MAX])
