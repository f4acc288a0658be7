"""A service's maintenance flag file is named once, not every check round: pathlib (Python
3.11) interns each part of a path it builds, and a file name interned and freed every round
wore out the interpreter's table of interned strings. Its ~1 MB resize, every few thousand
rounds, left a hole in the heap that small objects pinned: a nerve's RSS crept (soak s49)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from nerve.maintenance import MaintenanceFlag, MaintenanceStore


def count_interned(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    interned: list[str] = []
    real = sys.intern

    def counting(text: str) -> str:
        interned.append(text)
        return real(text)

    monkeypatch.setattr(sys, "intern", counting)
    return interned


def test_rounds_without_a_flag_name_no_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = MaintenanceStore(tmp_path)
    assert store.load("web") is None  # the first round names the file
    interned = count_interned(monkeypatch)
    for _ in range(1000):
        assert store.load("web") is None
    assert interned == []


def test_the_named_file_is_the_one_written_and_read(tmp_path: Path) -> None:
    store = MaintenanceStore(tmp_path)
    assert store.save("web/a b", MaintenanceFlag(reason="deploy", since=1.0))
    assert [p.name for p in tmp_path.iterdir()] == ["web%2Fa%20b.json"]
    again = MaintenanceStore(tmp_path)  # another store (a restart) reads it back
    flag = again.load("web/a b")
    assert flag is not None and flag.reason == "deploy"
    other = MaintenanceStore(tmp_path / "elsewhere")  # same service, another directory
    assert other.load("web/a b") is None
