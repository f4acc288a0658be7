"""The last good config's copy (smartstack.last_good): written whole, found for its own
config file only, and a refused file falls back to it (or exits with both errors)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from smartstack import last_good
from smartstack.config_errors import ConfigError
from smartstack.configfile import load


def test_a_copy_is_written_private_and_read_back(tmp_path: Path) -> None:
    doc = {"services": {"web": {"port": 80, "labels": {"zone": "az1"}}}, 1: "int key"}
    path = last_good.write(tmp_path / "state", tmp_path / "nerve.yaml", doc, 1_700_000_000.5)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # (a rendered ERB may be a password)
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp left
    assert path.name == last_good.copy_name(tmp_path / "nerve.yaml")
    copy = last_good.read(path)
    assert copy.document == doc and copy.written_at == 1_700_000_000.5
    assert copy.config == os.path.abspath(tmp_path / "nerve.yaml")
    assert last_good.since(copy.written_at) == "2023-11-14T22:13:20Z"
    plain = last_good.write(tmp_path / "json", tmp_path / "n.yaml", {"services": {}}, 1.0)
    assert plain.read_text().startswith("{")  # (JSON when it says it all: fast, YAML too)
    assert last_good.read(plain).document == {"services": {}}


def test_find_takes_the_newest_copy_of_this_config_only(tmp_path: Path) -> None:
    mine, old, broken = tmp_path / "mine", tmp_path / "old", tmp_path / "broken"
    last_good.write(mine, tmp_path / "a.yaml", {"x": 1}, 1.0)  # another config's, same dir
    last_good.write(mine, tmp_path / "b.yaml", {"x": 2}, 2.0)
    last_good.write(old, tmp_path / "b.yaml", {"x": 0}, 0.5)  # a state_dir left behind
    broken.mkdir()
    (broken / last_good.copy_name(tmp_path / "b.yaml")).write_text("format: 1\n")
    dirs = [tmp_path / "none", broken, old, mine]
    copy, notes = last_good.find(dirs, tmp_path / "b.yaml")
    assert copy is not None and copy.document == {"x": 2}
    assert "unreadable" in notes[0] and "older" in notes[1]
    a = last_good.find(dirs, tmp_path / "a.yaml")[0]  # (two configs, one directory: both kept)
    assert a is not None and a.document == {"x": 1}
    assert last_good.find([mine], tmp_path / "c.yaml")[0] is None


def test_a_copy_others_could_write_or_plant_is_passed_by(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o1777)
    config = tmp_path / "nerve.yaml"
    path = last_good.write(shared, config, {"x": 1}, 1.0)
    os.chmod(path, 0o666)  # (as another user's file would be: writable by them)
    copy, notes = last_good.find([shared], config)
    assert copy is None and "not trusted" in notes[0]
    path.unlink()
    planted = tmp_path / "theirs.yaml"  # a link planted at the copy's name, to a copy
    last_good.write(tmp_path / "elsewhere", config, {"x": 2}, 2.0)
    os.symlink(tmp_path / "elsewhere" / path.name, path)
    copy, notes = last_good.find([shared], config)
    assert copy is None and "symbolic link" in notes[0]
    path.unlink()
    planted.write_text("")
    for pid in range(os.getpid(), os.getpid() + 50):  # links at predictable temp names
        os.symlink(planted, shared / f".{path.name}.{pid}.tmp")
    written = last_good.write(shared, config, {"secret": "s3"}, 3.0)  # (the secrets)
    assert planted.read_text() == "" and not written.is_symlink()
    assert last_good.read(written).document == {"secret": "s3"}


def test_fall_back_runs_the_copy_or_exits_with_both_errors(tmp_path: Path) -> None:
    last_good.write(tmp_path, tmp_path / "c.yaml", {"a": 1}, 3.0)
    found = last_good.find([tmp_path], tmp_path / "c.yaml")
    config, warnings, info = last_good.fall_back(["bad: x"], found, lambda doc: (doc, ["w"]))
    assert config == {"a": 1} and warnings == ["w"]
    assert info["errors"] == ["bad: x"] and info["since"] == last_good.since(3.0)

    def refuse(doc: dict) -> tuple[dict, list[str]]:
        raise ConfigError(["copy: stricter now"])

    with pytest.raises(ConfigError) as both:
        last_good.fall_back(["bad: x"], found, refuse)
    assert both.value.lines[0] == "bad: x" and both.value.lines[-1] == "copy: stricter now"
    assert "refused too" in both.value.lines[1]
    with pytest.raises(ConfigError) as none:  # a first start: as before, the file's errors
        last_good.fall_back(["bad: x"], (None, []), refuse)
    assert none.value.lines == ["bad: x"]


def test_the_state_directory_of_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/a:/var/lib/b")
    assert last_good.state_directories() == [Path("/var/lib/a"), Path("/var/lib/b")]
    monkeypatch.delenv("STATE_DIRECTORY")
    assert last_good.state_directories() == []


def test_load_keeps_the_merged_document_and_validates_a_given_one(tmp_path: Path) -> None:
    from pydantic import BaseModel

    class Model(BaseModel):
        services: dict[str, dict]
        instance_id: str = ""
        service_conf_dir: str | None = None

    conf_dir = tmp_path / "conf.d"
    conf_dir.mkdir()
    (conf_dir / "api.yaml").write_text("port: 81\n")
    path = tmp_path / "main.yaml"
    path.write_text(f"instance_id: file\nservice_conf_dir: {conf_dir}\nservices:\n  web: {{}}\n")
    keep: list[dict] = []
    config, _ = load(Model, path, overrides={"instance_id": "flag"}, keep=keep)
    assert config.instance_id == "flag" and set(config.services) == {"web", "api"}
    assert keep[0]["instance_id"] == "file"  # as the file said it: the flag is applied again
    assert keep[0]["services"]["api"] == {"port": 81}
    (conf_dir / "api.yaml").unlink()  # the copy needs neither the directory nor the file
    path.write_text("{{ broken")
    again, _ = load(Model, path, overrides={"instance_id": "f2"}, document=keep[0])
    assert again.instance_id == "f2" and again.services["api"] == {"port": 81}


def test_keep_says_why_a_copy_was_not_written(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")  # a state directory that is a file
    unsaved = last_good.keep(tmp_path / "file" / "state", tmp_path / "c.yaml", {"a": 1})
    assert unsaved["unsaved"] is not None and unsaved["unsaved"]["directory"].endswith("state")
    assert last_good.keep(tmp_path / "ok", tmp_path / "c.yaml", {"a": 1}) == {"unsaved": None}
    assert last_good.keep(None, tmp_path / "c.yaml", {"a": 1}) == {"unsaved": None}  # nowhere
    odd = last_good.keep(tmp_path / "ok", tmp_path / "c.yaml", {"a": object()})  # (no YAML)
    assert odd["unsaved"]["error"].startswith("not writable as YAML: "), odd


def test_a_pending_copy_is_the_copy_only_once_promoted(tmp_path: Path) -> None:
    """synapse keeps its copy pending until HAProxy runs the config (review s39: a file
    HAProxy refused became the copy a start fell back to)."""
    state, config = tmp_path / "state", tmp_path / "synapse.yaml"
    last_good.write(state, config, {"v": "good"}, 1.0)
    first = last_good.keep(state, config, {"v": "refused"}, pending=True)["pending"]
    assert stat.S_IMODE(Path(first).stat().st_mode) == 0o600
    assert last_good.find([state], config)[0].document == {"v": "good"}  # not yet the copy
    second = Path(last_good.keep(state, config, {"v": "newer"}, pending=True)["pending"])
    assert not Path(first).exists()  # a newer load's supersedes it
    with pytest.raises(FileNotFoundError):
        last_good.promote(Path(first))
    assert last_good.promote(second) == state / last_good.copy_name(config)
    assert last_good.find([state], config)[0].document == {"v": "newer"}
    assert [p.name for p in state.iterdir()] == [last_good.copy_name(config)]


def test_a_copy_not_written_is_said_once_the_start_checks_passed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import logging

    from smartstack.last_good_state import LastGood

    state = LastGood("/etc/x.yaml", True, logging.getLogger("test.last_good"))
    unsaved = {"directory": "/var/lib/x", "error": "Read-only file system"}
    with caplog.at_level(logging.INFO, "test.last_good"):
        state.taken({"ok": True, "unsaved": unsaved})  # a start: its path checks come next
        assert "config_last_good_unsaved" not in caplog.text  # (not before their error)
        state.running()
        assert caplog.text.count("config_last_good_unsaved") == 1
        state.taken({"ok": True, "unsaved": unsaved})  # a SIGHUP: at once
        assert caplog.text.count("config_last_good_unsaved") == 2


def test_a_copy_in_use_says_its_age_and_when_it_is_old(caplog: pytest.LogCaptureFixture) -> None:
    """A weeks-old copy ran with only its ``since=`` to tell (review s39): its age is in the
    event and on /status, and beyond ``OLD_AFTER_S`` the wording says how many days old."""
    import logging
    import time

    from smartstack.last_good_state import LastGood
    from smartstack.logs import _FIELDS

    now = time.time()
    fresh, weeks = now - 60, now - 3 * 7 * 86400
    assert last_good.aged(fresh, now) == {"age_s": 60, "old": False}
    assert last_good.age_text(fresh, now) == f"from {last_good.since(fresh)}"
    assert last_good.age_text(weeks, now).endswith(", 21 days old")
    state = LastGood("/etc/x.yaml", True, logging.getLogger("test.last_good"))
    info = {"copy": "/s/c.yaml", "written_at": weeks, "since": last_good.since(weeks),
            "errors": ["x: unknown key"]}  # fmt: skip
    with caplog.at_level(logging.INFO, "test.last_good"):
        state.taken({"ok": True, "last_good": info})
    (used,) = [r for r in caplog.records if r.getMessage() == "config_last_good_used"]
    fields = used.__dict__[_FIELDS]
    assert fields["age_s"] >= 3 * 7 * 86400 and fields["old"] is True
    assert "21 days old" in fields["detail"]
    status = state.status()
    assert status is not None and status["old"] and status["age_s"] >= 3 * 7 * 86400
