"""Which server-state file synapse writes, and whether it writes one: the file HAProxy
reads (`server-state-base`), and none when the Airbnb config says ``do_writes: false``."""

from __future__ import annotations

import time
from pathlib import Path

from haproxy_helpers import haproxy_config

from synapse.haproxy.reader import RunningReader
from synapse.haproxy.runtime import RuntimeClient
from synapse.haproxy.settings import settings_for
from synapse.haproxy.statedump import state_dumper


def airbnb(tmp_path: Path, **overrides):
    settings = {
        "config_file_path": str(tmp_path / "haproxy.cfg"),
        "socket_file_path": str(tmp_path / "admin.sock"),
        "reload_command": "true",
    }
    return haproxy_config(**{**settings, **overrides})


def test_a_relative_state_file_is_under_server_state_base(tmp_path: Path):
    """Before: `st` in synapse's working directory, every second, while HAProxy read /x/st."""
    lines = ["server-state-base /x/", "server-state-file st"]
    assert settings_for(airbnb(tmp_path, **{"global": lines})).state_file == Path("/x/st")
    config = airbnb(tmp_path, server_state_file="st", **{"global": ["server-state-base /x"]})
    assert settings_for(config).state_file == Path("/x/st")
    absolute = ["server-state-base /x/", "server-state-file /y/st"]
    assert settings_for(airbnb(tmp_path, **{"global": absolute})).state_file == Path("/y/st")
    assert settings_for(airbnb(tmp_path, server_state_file="st")).state_file == Path("st")


def dumper(config):
    settings = settings_for(config)
    runtime = [RuntimeClient(settings.runtime_sockets[0])]
    reader = RunningReader(runtime, None, time.monotonic)
    return state_dumper(settings, runtime, None, reader, writes=config.do_writes)


def test_do_writes_false_writes_no_state_file(tmp_path: Path):
    """The docs: `do_writes: false` never writes (before: the dumper wrote the state file
    every second all the same)."""
    state = str(tmp_path / "state")
    assert dumper(airbnb(tmp_path, server_state_file=state)) is not None
    assert dumper(airbnb(tmp_path, server_state_file=state, do_writes=False)) is None
