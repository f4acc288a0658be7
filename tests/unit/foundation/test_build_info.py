"""smartstack.build_info reads its own dist-info instead of importing importlib.metadata
(~0.7 MB of RSS in every daemon): it must say what importlib.metadata would."""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

import pytest

from smartstack import build_info


@pytest.fixture(autouse=True)
def fresh_caches():
    for cached in (build_info._dist_info, build_info.version, build_info.revision):
        cached.cache_clear()
    yield
    for cached in (build_info._dist_info, build_info.version, build_info.revision):
        cached.cache_clear()


def test_the_version_is_the_installed_distributions() -> None:
    assert build_info.version() == metadata.version("smartstack")
    found = build_info._dist_info()
    assert (
        found is not None and found.name == f"smartstack-{metadata.version('smartstack')}.dist-info"
    )


def make_dist(root: Path, version: str, direct: dict | None = None) -> Path:
    info = root / f"smartstack-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: smartstack\nVersion: {version}\n\nVersion: not this\n"
    )
    if direct is not None:
        (info / "direct_url.json").write_text(json.dumps(direct))
    (root / "smartstack_other-9.dist-info").mkdir()  # another distribution's prefix
    return info


def test_the_first_dist_info_on_the_path_wins(tmp_path: Path, monkeypatch) -> None:
    make_dist(tmp_path / "a", "7.1.2", {"url": "git+x", "vcs_info": {"commit_id": "abc123"}})
    monkeypatch.setattr("sys.path", [str(tmp_path / "missing"), str(tmp_path / "a")])
    monkeypatch.delenv("SMARTSTACK_REVISION", raising=False)
    assert build_info.version() == "7.1.2"
    assert build_info.revision() == "abc123"


def test_without_a_dist_info_it_asks_importlib_metadata(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("sys.path", [str(tmp_path)])
    monkeypatch.setattr(metadata, "distribution", lambda name: (_ for _ in ()).throw(
        metadata.PackageNotFoundError(name)))  # fmt: skip
    assert build_info.version() == "unknown"


def test_an_installed_daemon_never_imports_importlib_metadata(monkeypatch) -> None:
    import importlib
    import sys

    expected = metadata.version("smartstack")
    monkeypatch.delattr(importlib, "metadata")
    monkeypatch.setitem(sys.modules, "importlib.metadata", None)  # importing it now raises
    monkeypatch.delenv("SMARTSTACK_REVISION", raising=False)
    assert build_info.version() == expected
    build_info.revision()
