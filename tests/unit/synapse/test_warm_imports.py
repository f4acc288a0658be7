"""synapse.warm_imports: what a start imports while the validating child works, guessed
from the config file's words (a wrong guess costs time or memory, never a behaviour)."""

from __future__ import annotations

from pathlib import Path

from synapse.warm_imports import ALWAYS, guess, warm

ZK = """
haproxy: {config_file_path: /tmp/x.cfg, reload_command: "true"}
services:
  web: {discovery: {method: zookeeper, hosts: ["zk:2181"], path: /web}, haproxy: {port: 3000}}
"""


def test_the_words_of_the_config_name_what_its_daemon_imports(tmp_path: Path) -> None:
    path = tmp_path / "synapse.yaml"
    path.write_text(ZK)
    assert guess(path) == ["synapse.haproxy.controller", "synapse.watchers.zookeeper", *ALWAYS]
    path.write_text(ZK.replace("zookeeper", "ETCD").replace("haproxy", "file_output"))
    etcd = ["synapse.watchers.etcd", "smartstack.etcd_json", *ALWAYS]  # (any case)
    assert guess(path) == etcd

    # More etcd services than the JSON gateway serves, or gRPC asked for: gRPC's client.
    def services(count: int) -> str:
        block = '  s{}: {{discovery: {{"method": "etcd", path: /s{}}}}}\n'
        return "services:\n" + "".join(block.format(i, i) for i in range(count))

    path.write_text(services(8))
    assert guess(path) == etcd
    path.write_text(services(9))
    assert guess(path) == ["synapse.watchers.etcd", "smartstack.etcd", *ALWAYS]
    path.write_text(services(1) + "# etcd_transport: grpc\n")
    assert "smartstack.etcd" in guess(path)
    path.write_text(services(9).replace("path:", "etcd_transport: json, path:"))
    assert guess(path) == etcd
    path.write_text('{"services": {}}')
    assert guess(path) == list(ALWAYS)


def test_an_unreadable_file_is_no_guess_and_warm_never_raises(tmp_path: Path, monkeypatch) -> None:
    assert guess(tmp_path / "missing.yaml") == []  # the child reports it
    assert guess(tmp_path) == []  # a directory
    path = tmp_path / "synapse.yaml"
    path.write_text(ZK)
    imported: list[str] = []

    def fake_import(name: str) -> None:
        imported.append(name)
        raise ImportError(f"no {name}")  # the daemon's own import would say why

    monkeypatch.setattr("synapse.warm_imports.importlib.import_module", fake_import)
    warm(path)
    assert imported == guess(path)


def test_the_modules_of_the_start_before_its_fork_do_not_load_asyncio() -> None:
    """The validating child is forked once synapse.cli, synapse.config_load and its
    SHARED_IMPORTS are loaded; asyncio (~20-45 ms) is for the daemon only, imported while
    the child works. (pytest has asyncio loaded already: checked by what these modules
    hold, a module-level import would be one of their names.)"""
    import importlib

    from synapse import cli, config_child, config_load

    for module in (cli, config_load, config_child):
        assert "asyncio" not in vars(module), module.__name__
    for name in config_load.SHARED_IMPORTS:
        assert "asyncio" not in vars(importlib.import_module(name)), name


def test_warming_stops_once_the_child_has_answered(tmp_path: Path, monkeypatch) -> None:
    """The imports use the wait only: once the answer is there the rest comes when needed."""
    path = tmp_path / "synapse.yaml"
    path.write_text(ZK)
    imported: list[str] = []
    monkeypatch.setattr("synapse.warm_imports.importlib.import_module", imported.append)
    warm(path, lambda: len(imported) == 2)
    assert imported == guess(path)[:2]
    imported.clear()
    warm(path, lambda: True)
    assert imported == []
