"""nerve fixes glibc's mmap threshold before it runs (smartstack.malloc_tune): asyncio reads
every socket and pipe into a fresh 256 KB buffer; once glibc's threshold had risen past that
size those buffers came from the brk heap, which then grew for good in a soak (session 50)."""

from __future__ import annotations

import argparse
from types import SimpleNamespace
from typing import Any

import pytest

import nerve.main
from nerve import cli
from smartstack import child_watch, malloc_tune


def test_nerve_tunes_malloc_before_it_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(malloc_tune, "tune_malloc", lambda *a: calls.append("tune") or [])
    monkeypatch.setattr(nerve.main, "run", lambda *a: calls.append("run") or 0)
    monkeypatch.setattr(cli, "nerve_lock", lambda *a: None)
    monkeypatch.setattr(child_watch, "use_pidfds", lambda: None)
    source: Any = SimpleNamespace(last_good=SimpleNamespace(running=lambda: None))
    config: Any = SimpleNamespace()
    assert cli._run(config, argparse.Namespace(config="nerve.json"), source) == 0
    assert calls == ["tune", "run"]
