"""A validated synapse config handed over as the validating child does (pickled pydantic
models, synapse.config_child) into the plain models a daemon holds (smartstack.model_plain),
compared with pydantic's own objects."""

from __future__ import annotations

import contextlib
import pickle
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from smartstack.config_child import PROTOCOL
from smartstack.model_plain import ConfigModel
from synapse.config import load_synapse_config

CONFIG = """
haproxy:
  config_file_path: {tmp}/haproxy.cfg
  reload_command: "true"
  socket_file_path: [{tmp}/a.sock, {tmp}/b.sock]
  global: [daemon]
  use_nerve_weights: true
  shared_frontend: ["bind :80", "mode http"]
  extra_sections: {{"userlist l": ["user u insecure-password p"]}}
services:
  web:
    discovery: {{method: zookeeper, hosts: "zk1:2181,zk2:2181", path: /web}}
    haproxy: {{port: 3000, server_options: check, routes: {{hosts: [web.example]}}}}
    default_servers: ["10.0.0.1:80"]
    not_ours: {{deep: [1, 2.5, true]}}
  backend_only:
    discovery:
      method: multi
      watchers: {{a: {{method: dns, servers: [x.example:1]}}}}
      resolver: {{method: union}}
    haproxy: {{server_port_override: 8080}}
    zone_routing: {{zones: [z1, z2]}}
statsd: {{host: 127.0.0.1}}
"""


class Versioned(ConfigModel):
    a: int = 1


@contextlib.contextmanager
def fresh_modules() -> Iterator[None]:
    """smartstack and synapse imported afresh inside; the modules as they were put back after."""
    ours = ("smartstack", "synapse")
    saved = {k: v for k, v in sys.modules.items() if k.split(".")[0] in ours}
    for name in saved:
        del sys.modules[name]
    try:
        yield
    finally:
        for name in [k for k in sys.modules if k.split(".")[0] in ours]:
            del sys.modules[name]
        sys.modules.update(saved)


@contextlib.contextmanager
def plain_modules() -> Iterator[ModuleType]:
    """synapse.config imported afresh on the plain base."""
    with fresh_modules():
        from smartstack import modelbase

        modelbase.select_plain()
        import synapse.config

        yield synapse.config


def _pairs(validated: Any, rebuilt: Any, path: str = "") -> Iterator[tuple[str, Any, Any]]:
    """(where, pydantic model, plain model) for every model in both trees."""
    if hasattr(validated, "model_fields_set"):
        yield path, validated, rebuilt
        for name in type(validated).model_fields:
            yield from _pairs(getattr(validated, name), getattr(rebuilt, name), f"{path}.{name}")
    elif isinstance(validated, dict):
        for key in validated:
            yield from _pairs(validated[key], rebuilt[key], f"{path}[{key}]")
    elif isinstance(validated, list):
        for index, item in enumerate(validated):
            yield from _pairs(item, rebuilt[index], f"{path}[{index}]")


def test_a_config_round_trips_into_plain_objects_of_the_same_classes(tmp_path: Path) -> None:
    path = tmp_path / "synapse.yaml"
    path.write_text(CONFIG.format(tmp=tmp_path))
    validated, _ = load_synapse_config(path)
    data = pickle.dumps(validated, PROTOCOL)
    with plain_modules() as plain:
        rebuilt = pickle.loads(data)  # resolved to the plain classes: what the daemon imported
        assert type(rebuilt) is plain.SynapseConfig and "pydantic" not in repr(
            type(rebuilt).__mro__
        )
        assert rebuilt.model_dump() == validated.model_dump()
        for where, old, new in _pairs(validated, rebuilt):
            assert type(new).__qualname__ == type(old).__qualname__, where
            assert new.model_fields_set == old.model_fields_set, where
            assert new.model_extra == (old.model_extra or {}), where
        web, backend_only = rebuilt.services["web"], rebuilt.services["backend_only"]
        assert web.haproxy.has_frontend and not backend_only.haproxy.has_frontend
        assert backend_only.port_override == 8080 and web.haproxy.use_nerve_weights is True
        assert rebuilt.haproxy.socket_paths == [f"{tmp_path}/a.sock", f"{tmp_path}/b.sock"]
        assert web.discovery.hosts == ["zk1:2181", "zk2:2181"] and web.model_extra["not_ours"]
        # a section left at its defaults is one instance per class, as config_share makes it
        assert web.file_output is backend_only.file_output
        again = pickle.loads(data).services
        assert rebuilt.services == again and rebuilt.services["web"] is not again["web"]
        assert pickle.loads(pickle.dumps(rebuilt)) == rebuilt  # plain models pickle too


def test_the_child_answer_says_whether_the_daemon_can_run_without_pydantic(tmp_path: Path) -> None:
    from synapse.config_child import validate_file

    path = tmp_path / "synapse.yaml"
    path.write_text(CONFIG.format(tmp=tmp_path))
    answer = validate_file(str(path), None, False)
    assert (
        answer["ok"]
        and answer["plain"]
        and answer["config"].services.keys()
        == {
            "web",
            "backend_only",
        }
    )
    assert answer["routed"]  # web has routes: an edge, validated in-process from its start
    path.write_text(CONFIG.format(tmp=tmp_path) + "docker_services: {enabled: true}\n")
    assert validate_file(str(path), None, False)["plain"] is False  # labels validated live
    path.write_text(CONFIG.format(tmp=tmp_path).replace("routes: {hosts: [web.example]}",
                                                        "routes: {}"))  # fmt: skip
    assert validate_file(str(path), None, False)["routed"] is False  # a sidecar: children
    path.write_text(CONFIG.format(tmp=tmp_path).replace("port: 3000", "prot: 3000"))
    bad = validate_file(str(path), None, False)
    assert bad == {"ok": False, "lines": [f"{path}: services.web.haproxy.prot: unknown key, "
                                          "did you mean 'port'?"]}  # fmt: skip


def test_a_reload_keeps_the_objects_of_unchanged_services(tmp_path: Path) -> None:
    """The daemon sends the child its services' digests; the child leaves the unchanged
    ones out (None) and the daemon keeps their objects: a SIGHUP unpickles what changed."""
    from smartstack.config_child import answer_lines as _lines
    from synapse.config_child import validate_file
    from synapse.config_load import ConfigSource

    path = tmp_path / "synapse.yaml"
    path.write_text(CONFIG.format(tmp=tmp_path))
    source = ConfigSource(str(path))
    first = source._kept(validate_file(str(path), None, False, {}))  # a first SIGHUP's
    path.write_text(CONFIG.format(tmp=tmp_path).replace("port: 3000", "port: 3001"))
    answer = validate_file(str(path), None, False, source._digests)
    assert answer["config"].services["backend_only"] is None  # left out: same digest
    second = source._kept(answer)
    assert second.services["backend_only"] is first.services["backend_only"]
    assert second.services["web"].haproxy.port == 3001
    assert list(second.services) == ["web", "backend_only"]
    unchanged = source._kept(validate_file(str(path), None, False))  # the start's: by ==
    assert unchanged.services["web"] is second.services["web"]
    crash = {"ok": False, "crash": "Traceback ...\nKeyError: 'x'\n"}
    assert _lines(crash) == ["validating the config failed: KeyError: 'x'"]


def test_what_is_imported_before_the_fork_leaves_the_model_base_open() -> None:
    """synapse.config_load imports these before it forks the validating child: none may take
    a name from smartstack.modelbase (that would fix the base before the daemon chose)."""
    import importlib

    with fresh_modules():
        from smartstack import modelbase
        from synapse.config_load import SHARED_IMPORTS

        for module in SHARED_IMPORTS:
            importlib.import_module(module)
        assert modelbase._plain is None


def test_a_reload_replaces_a_service_equal_but_with_other_fields_given(tmp_path: Path) -> None:
    """``port: null`` and no port are == but not the same config (has_frontend reads which
    fields were given): the reloaded object is taken, not the old one."""
    from synapse.config_child import validate_file
    from synapse.config_load import ConfigSource

    path = tmp_path / "synapse.yaml"
    path.write_text(CONFIG.format(tmp=tmp_path).replace("port: 3000", "port: null"))
    source = ConfigSource(str(path))
    assert source._kept(validate_file(str(path), None, False)).services["web"].haproxy.has_frontend
    path.write_text(CONFIG.format(tmp=tmp_path).replace("port: 3000, ", ""))
    again = source._kept(validate_file(str(path), None, False)).services["web"]
    assert not again.haproxy.has_frontend


def test_a_broken_answer_or_a_failed_fork_is_an_error_answer(monkeypatch) -> None:
    """Not a traceback out of the start (load_or_exit reports ConfigError lines only)."""
    from smartstack.config_child import answer_lines as _lines
    from synapse import config_child

    truncated = pickle.dumps({"ok": True, "config": "x" * 100}, PROTOCOL)[:-7]
    answer = config_child.unpickled(truncated, b"", -9)
    assert answer["ok"] is False and "exited with -9" in answer["crash"]

    def no_fork() -> int:
        raise OSError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(config_child.os, "fork", no_fork)
    monkeypatch.setattr(config_child.config_child, "threads_running", lambda: 1)
    failed = config_child.ForkedValidation("synapse.yaml", None, False).answer()
    assert _lines(failed) == [
        "validating the config failed: forking the validating child failed:"
        " [Errno 11] Resource temporarily unavailable"
    ]
    monkeypatch.setattr(config_child.config_child, "threads_running", lambda: 3)
    monkeypatch.setattr(config_child.config_child, "_spawned", lambda *args: no_fork())
    failed = config_child.ForkedValidation("synapse.yaml", None, False).answer()
    assert _lines(failed)[0].startswith("validating the config failed: spawning the")

    stale = pickle.dumps(Versioned(a=2), PROTOCOL)  # the child's code has field a
    monkeypatch.setattr(Versioned, "model_fields", {})  # the daemon's (older) class has not
    assert _lines(config_child.unpickled(stale, b"", 0))[0].endswith(
        "restart synapse to load this config"
    )
    renamed = stale.replace(b"Versioned", b"Versioneq")  # a class the daemon has not
    assert "restart synapse" in _lines(config_child.unpickled(renamed, b"", 0))[0]


def test_an_in_process_reload_refuses_to_turn_docker_services_on(
    tmp_path: Path, monkeypatch
) -> None:
    """An edge validates its SIGHUPs in-process; the Docker source starts only with the
    daemon, so turning docker_services on is refused there as on the child path (else the
    reload would be taken and no container ever watched)."""
    import asyncio

    import pytest

    from smartstack.config_errors import ConfigError
    from synapse.config_load import IN_PROCESS_ENV, ConfigSource

    monkeypatch.setenv(IN_PROCESS_ENV, "1")
    path = tmp_path / "synapse.yaml"
    path.write_text(CONFIG.format(tmp=tmp_path))
    edge = ConfigSource(str(path))
    edge.first()
    path.write_text(CONFIG.format(tmp=tmp_path) + "docker_services: {enabled: true}\n")
    with pytest.raises(ConfigError, match="enabling docker_services needs a restart"):
        asyncio.run(edge.reload())
    docker = ConfigSource(str(path))  # on from the start: its reloads go through
    docker.first()
    config, _ = asyncio.run(docker.reload())
    assert config.docker_services is not None and config.docker_services.enabled
