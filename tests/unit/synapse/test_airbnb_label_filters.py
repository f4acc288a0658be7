"""Airbnb synapse's label filter shapes: the deprecated singular ``label_filter`` and filter
values written as YAML booleans or numbers, matched against records nerve wrote."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from smartstack.config_check import AIRBNB_KEYS
from smartstack.record import decode_nerve
from synapse.config import load_synapse_config
from synapse.model import Found
from synapse.selection import select_servers

HAPROXY = {"config_file_path": "/tmp/x.cfg", "reload_command": "true"}
ZK = {"method": "zookeeper", "hosts": ["127.0.0.1:2181"], "path": "/nerve/services/web"}
AZ = {"label": "az", "value": "us-east-1a", "condition": "equals"}
NOT_CANARY = {"label": "canary", "value": True, "condition": "not-equals"}


def write(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(json.dumps(doc))
    return path


def nerve_record(name: str, **labels: Any) -> Found:
    """A record as nerve writes it from YAML labels (booleans and numbers as they are)."""
    data = json.dumps({"host": "10.0.0.1", "port": 80, "name": name, "labels": labels})
    return Found(decode_nerve(data.encode()), f"zk:/nerve/services/web/{name}")


RECORDS = [
    nerve_record("east", az="us-east-1a", canary=False, tier=1, ratio=0.5),
    nerve_record("east_canary", az="us-east-1a", canary=True, tier=2, ratio=1.5),
    nerve_record("west", az="us-west-2b", canary=False, tier=1, ratio=0.5),
]


def chosen(path: Path, strict: bool = False) -> tuple[list[str], list[str]]:
    """(names of the servers the file's service keeps from RECORDS, the loader's warnings)."""
    config, warnings = load_synapse_config(path, strict=strict)
    selection = select_servers(config.services["web"], RECORDS, None)
    return sorted(s.name.split("_10.")[0] for s in selection.servers), warnings


@pytest.mark.parametrize(
    ("discovery", "kept"),
    [
        ({"label_filter": AZ}, ["east", "east_canary"]),
        ({"label_filter": [AZ, NOT_CANARY]}, ["east"]),
        ({"label_filter": AZ, "label_filters": [NOT_CANARY]}, ["east"]),
        ({"label_filter": None, "label_filters": [NOT_CANARY]}, ["east", "west"]),
    ],
)
def test_the_singular_label_filter_is_honoured_with_a_warning(
    tmp_path: Path, discovery: dict[str, Any], kept: list[str]
) -> None:
    # Ruby (service_watcher/base.rb): warns, then [label_filter, label_filters].flatten.compact.
    path = write(tmp_path / "synapse.json", {
        "services": {"web": {"discovery": {**ZK, **discovery}}}, "haproxy": HAPROXY,
    })  # fmt: skip
    names, warnings = chosen(path, strict=True)  # consumed, so not even --strict refuses it
    assert names == kept
    assert warnings == [
        f"{path}: services.web.discovery.label_filter: deprecated (as in Ruby synapse): "
        "merged into label_filters; write it there"
    ]
    assert "label_filter" in AIRBNB_KEYS  # wherever else it appears: never a "did you mean"


def test_the_warning_names_the_service_file_and_nested_discovery_blocks(tmp_path: Path) -> None:
    conf_dir = tmp_path / "services"
    conf_dir.mkdir()
    write(conf_dir / "web.json", {"discovery": {**ZK, "label_filter": AZ}})
    multi = {"method": "multi", "resolver": {"method": "union"},
             "watchers": {"east": {**ZK, "label_filter": AZ}, "all": ZK}}  # fmt: skip
    path = write(tmp_path / "synapse.json", {
        "services": {"api": {"discovery": multi}, "db": {"discovery": ZK,
                     "discovery_multi": {"resolver": {"method": "union"},
                                         "watchers": {"b": {**ZK, "label_filter": [AZ]}}}}},
        "service_conf_dir": str(conf_dir), "haproxy": HAPROXY,
    })  # fmt: skip
    config, warnings = load_synapse_config(path)
    tail = ": deprecated (as in Ruby synapse): merged into label_filters; write it there"
    assert sorted(warnings) == sorted([
        f"{path}: services.api.discovery.watchers.east.label_filter{tail}",
        f"{path}: services.db.discovery_multi.watchers.b.label_filter{tail}",
        f"{conf_dir / 'web.json'}: services.web.discovery.label_filter{tail}",
    ])  # fmt: skip
    assert config.services["web"].discovery.label_filters[0].value == "us-east-1a"
    assert config.services["api"].discovery.watchers["east"].label_filters[0].label == "az"
    assert config.services["db"].discovery.watchers["b"].label_filters[0].label == "az"


@pytest.mark.parametrize(
    ("rule", "kept"),
    [
        ({"label": "canary", "value": False}, ["east", "west"]),
        ({"label": "canary", "value": True, "condition": "not-equals"}, ["east", "west"]),
        ({"label": "tier", "value": 2}, ["east_canary"]),
        ({"label": "ratio", "value": 0.5, "condition": "not-equals"}, ["east_canary"]),
        ({"label": "canary", "value": "true"}, ["east_canary"]),  # written as a string: as before
    ],
)
def test_boolean_and_number_values_match_the_labels_nerve_wrote(
    tmp_path: Path, rule: dict[str, Any], kept: list[str]
) -> None:
    # Ruby compares the two as YAML and JSON gave them: `value: false` matches `canary: false`.
    path = write(tmp_path / "synapse.json", {
        "services": {"web": {"discovery": {**ZK, "label_filters": [rule]}}}, "haproxy": HAPROXY,
    })  # fmt: skip
    assert chosen(path) == (kept, [])


@pytest.mark.parametrize("value", [None, [1], {"a": 1}])
def test_a_value_that_is_not_a_scalar_is_still_refused(tmp_path: Path, value: Any) -> None:
    from smartstack.configfile import ConfigError

    rule = {"label": "a", "value": value}
    path = write(tmp_path / "synapse.json", {
        "services": {"web": {"discovery": {**ZK, "label_filters": [rule]}}}, "haproxy": HAPROXY,
    })  # fmt: skip
    with pytest.raises(ConfigError) as info:
        load_synapse_config(path)
    assert info.value.lines[0].startswith(
        f"{path}: services.web.discovery.label_filters[0].value: Input should be a valid string"
    )
