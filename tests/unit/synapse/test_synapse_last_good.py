"""synapse's last good config (synapse.last_good): kept beside the state file, found from
what the refused file still says or systemd's $STATE_DIRECTORY, ERB rendered once."""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path

import pytest
import yaml

from smartstack.last_good import copy_name
from smartstack.last_good_state import LastGood
from synapse.config_child import validate_file
from synapse.last_good import copy_dirs, state_file


def config(tmp_path: Path, port: str = "3301") -> dict:
    return {
        "services": {"web": {
            "discovery": {"method": "zookeeper", "hosts": ["127.0.0.1:2181"], "path": "/w"},
            "haproxy": {"port": port},
        }},
        "haproxy": {"config_file_path": str(tmp_path / "run" / "haproxy.cfg"),
                    "managed": {"master_socket_path": str(tmp_path / "m.sock")}},
    }  # fmt: skip


def test_the_state_file_and_the_copy_beside_it(tmp_path: Path) -> None:
    assert state_file("/s/state.json", None, None) == "/s/state.json"
    assert state_file(None, {}, "/r/haproxy.cfg") == "/r/haproxy.synapse-state.json"
    assert state_file(None, None, "/r/haproxy.cfg") is None  # Airbnb mode: none kept
    path = tmp_path / "synapse.yaml"
    path.write_text(yaml.safe_dump(config(tmp_path)))
    assert copy_dirs(str(path))[0] == tmp_path / "run"
    path.write_text("services: [")  # cut short: only $STATE_DIRECTORY is left
    assert copy_dirs(str(path)) == []


def test_a_start_runs_the_copy_of_a_rendered_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "synapse.yaml"
    path.write_text(yaml.safe_dump(config(tmp_path, "<%= ENV['WEB_PORT'] %>")))
    monkeypatch.setenv("WEB_PORT", "3301")
    answer = validate_file(str(path), None, False, {}, fallback=True)
    assert answer["ok"] and answer["unsaved"] is None and "last_good" not in answer
    assert not (tmp_path / "run" / copy_name(path)).exists()  # pending until HAProxy runs it
    LastGood(str(path), True, logging.getLogger("synapse.daemon")).accepted(answer["pending"])
    copy = yaml.safe_load((tmp_path / "run" / copy_name(path)).read_text())
    assert int(copy["document"]["services"]["web"]["haproxy"]["port"]) == 3301  # (rendered)
    monkeypatch.delenv("WEB_PORT")  # the file no longer renders: invalid
    assert not validate_file(str(path), None, False, {})["ok"]  # -k, SIGHUP: refused
    answer = validate_file(str(path), None, False, {}, fallback=True)  # a start
    assert answer["ok"] and answer["config"].services["web"].haproxy.port == 3301
    assert "WEB_PORT" in answer["last_good"]["errors"][0]
    source = LastGood(str(path), True, logging.getLogger("synapse.daemon"))
    source.taken(answer)
    assert source.info is not None
    assert source.info["copy"] == str(tmp_path / "run" / copy_name(path))


def test_without_a_place_for_the_copy_a_start_exits_as_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    airbnb = config(tmp_path)
    del airbnb["haproxy"]["managed"]
    airbnb["haproxy"]["reload_command"] = "true"
    path = tmp_path / "synapse.yaml"
    path.write_text(yaml.safe_dump(airbnb))
    assert validate_file(str(path), None, False, {}, fallback=True)["ok"]
    assert not list(tmp_path.rglob(copy_name(path)))  # (nowhere to keep it)
    path.write_text(yaml.safe_dump({**airbnb, "servics": {}}))
    answer = validate_file(str(path), None, False, {}, fallback=True)
    assert not answer["ok"] and "servics" in " ".join(answer["lines"])


def test_an_in_process_reload_writes_the_copy_off_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An edge's SIGHUP (validated in-process) wrote the copy on the loop: ~8-20 ms of each
    SIGHUP at 1,000 routed services (review s39). Now a thread writes it, before the
    answer is taken (the next SIGHUP waits for the daemon's reload lock)."""
    from smartstack import last_good
    from synapse.config_load import ConfigSource

    path = tmp_path / "synapse.yaml"
    path.write_text(yaml.safe_dump(config(tmp_path)))
    threads: list[str] = []
    write = last_good.write

    def recorded(*args: object, **kwargs: object) -> Path:
        threads.append(threading.current_thread().name)
        return write(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(last_good, "write", recorded)
    source = ConfigSource(str(path))  # (not plain: validated in-process, as an edge's)
    loaded, _ = asyncio.run(source.reload())
    assert loaded.services["web"].haproxy.port == 3301
    assert threads and threading.main_thread().name not in threads
    pending = source.last_good.pending
    assert pending is not None and Path(pending).exists()  # (kept once HAProxy runs it)
