"""A validated synapse config through the tagged tree (smartstack.model_tree) into the plain
models a daemon holds (smartstack.model_plain), compared with pydantic's own objects."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from smartstack.config_share import _SHARED
from smartstack.model_tree import Rebuilder, emit
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


@pytest.fixture
def plain() -> Iterator[ModuleType]:
    """synapse.config imported afresh on the plain base; the pydantic modules put back after."""
    ours = ("smartstack", "synapse")
    saved = {k: v for k, v in sys.modules.items() if k.split(".")[0] in ours}
    for name in saved:
        del sys.modules[name]
    try:
        from smartstack import modelbase

        modelbase.select_plain()
        import synapse.config

        yield synapse.config
    finally:
        for name in [k for k in sys.modules if k.split(".")[0] in ours]:
            del sys.modules[name]
        sys.modules.update(saved)


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


def test_a_config_round_trips_into_plain_objects_of_the_same_classes(
    tmp_path: Path, plain: ModuleType
) -> None:
    path = tmp_path / "synapse.yaml"
    path.write_text(CONFIG.format(tmp=tmp_path))
    validated, _ = load_synapse_config(path)
    shared = {cls: model for cls, model in _SHARED.items() if model is not None}
    tree = json.loads(json.dumps(emit(validated, shared)))
    rebuilt = Rebuilder().build(tree)
    assert type(rebuilt) is plain.SynapseConfig and "pydantic" not in repr(type(rebuilt).__mro__)
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
    assert rebuilt.services == Rebuilder().build(tree).services  # equal, not identical


def test_tags_carry_what_json_cannot(plain: ModuleType) -> None:
    import datetime
    import enum

    value = {
        "t": (1, "a"),
        "s": {1, 2},
        "f": frozenset({"x"}),
        "__odd": 1,
        3: "int key",
        "d": datetime.date(2024, 1, 2),
        "dt": datetime.datetime(2024, 1, 2, 3, 4, 5),
        "e": [None, True, 1.5],
    }
    tree = json.loads(json.dumps(emit(value)))
    assert Rebuilder().build(tree) == value
    flag = Rebuilder().build(json.loads(json.dumps(emit({"e": enum.FlagBoundary.STRICT}))))
    assert flag == {"e": enum.FlagBoundary.STRICT}
    with pytest.raises(TypeError, match="cannot be handed over"):
        emit({"x": object()})
