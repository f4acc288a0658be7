"""nerve's last good config (nerve.last_good): a valid file is kept in state_dir; a start
with an invalid one runs that copy (loudly); -k and SIGHUP never do."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from nerve.config_child import validate_file
from nerve.last_good import config_health, config_state
from smartstack.last_good import copy_name, read
from smartstack.last_good import write as write_copy
from smartstack.last_good_state import LastGood

SERVICE = {"host": "127.0.0.1", "port": 8080, "zk_hosts": ["127.0.0.1:2181"], "zk_path": "/x",
           "checks": [{"type": "tcp"}]}  # fmt: skip


def write(path: Path, config: dict | str) -> str:
    path.write_text(config if isinstance(config, str) else json.dumps(config))
    return str(path)


def kept(path: str) -> LastGood:
    """A valid file loaded as a start does: its copy written."""
    source = LastGood(path, True, logging.getLogger("nerve"))
    answer = validate_file(path, None, False, fallback=True)
    assert answer["ok"] and answer["last_good"] is None
    source.taken(answer)
    return source


def test_a_start_with_an_invalid_file_runs_the_last_good_copy(tmp_path: Path) -> None:
    good = {"instance_id": "h1", "state_dir": "st", "services": {"web": SERVICE}}
    path = write(tmp_path / "nerve.json", good)
    kept(path)
    assert (tmp_path / "st" / copy_name(path)).exists()  # (state_dir: relative to the file)
    typo = {**good, "services": {"web": {**SERVICE, "chekcs": SERVICE["checks"]}}}
    del typo["services"]["web"]["checks"]
    write(tmp_path / "nerve.json", typo)
    assert not validate_file(path, None, False)["ok"]  # -k, SIGHUP: refused as before
    answer = validate_file(path, "h2", False, fallback=True)  # a start
    assert answer["ok"] and answer["config"].services["web"].checks[0].type == "tcp"
    assert answer["config"].instance_id == "h2"  # (-i applies to the copy too)
    assert "chekcs" in answer["last_good"]["errors"][0] and answer.get("unsaved") is None
    source = LastGood(path, True, logging.getLogger("nerve"))
    source.taken(answer)
    assert config_state(type("S", (), {"last_good": source})())["config_last_good"] is not None
    health = config_health(True, type("S", (), {"last_good": source})())
    assert not isinstance(health, bool) and health.ok and "last good" in health.detail["detail"]
    write(tmp_path / "nerve.json", {**good, "services": {"web": {**SERVICE, "port": 81}}})
    source.taken(validate_file(path, None, False))  # SIGHUP with the fixed file
    assert source.info is None and config_health(True, type("S", (), {"last_good": source})())


def test_an_unparseable_file_finds_its_copy_in_systemds_state_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "var"))
    good = {"instance_id": "h1", "state_dir": str(tmp_path / "var"), "services": {"web": SERVICE}}
    path = write(tmp_path / "nerve.json", good)
    kept(path)
    write(tmp_path / "nerve.json", '{"instance_id": "h1", "services": {')  # cut short
    answer = validate_file(path, None, False, fallback=True)
    assert answer["ok"] and list(answer["config"].services) == ["web"]


def test_no_copy_or_a_copy_refused_too_exits_with_the_errors(tmp_path: Path) -> None:
    path = write(tmp_path / "nerve.json", {"instance_id": "h1", "services": {"web": {}}})
    first = validate_file(path, None, False, fallback=True)  # a first start: no copy
    assert not first["ok"] and all("last good" not in line for line in first["lines"])
    good = {"instance_id": "h1", "services": {"web": SERVICE}}
    write(tmp_path / "nerve.json", good)
    kept(path)
    copy = read(tmp_path / "nerve-state" / copy_name(path))  # an upgrade that checks more, made up:
    copy.document["services"]["web"]["port"] = 0
    write_copy(copy.path.parent, path, copy.document, copy.written_at)
    write(tmp_path / "nerve.json", {"instance_id": "h1", "services": {"web": {}}})
    both = validate_file(path, None, False, fallback=True)
    assert not both["ok"] and "refused too" in " ".join(both["lines"])
    assert both["lines"][0] == first["lines"][0] and "services.web.port" in both["lines"][-1]
