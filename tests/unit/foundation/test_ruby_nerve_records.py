"""Records Ruby nerve writes and Ruby synapse serves: a weight above 256, labels with null,
list or object values. Their servers are kept; what decoding changed is in ``ignored``."""

from __future__ import annotations

import base64
import json
import logging
from types import SimpleNamespace

import pytest
from prometheus_client import CollectorRegistry

from smartstack import logs
from smartstack.record import InvalidRecord, decode_child_name, decode_nerve
from synapse.config import ServiceConfig
from synapse.metrics import SynapseMetrics
from synapse.model import Found
from synapse.selection import select_servers
from synapse.watchers.record_notes import note_ignored


def record(**fields: object) -> bytes:
    return json.dumps({"host": "10.0.0.1", "port": 80, "name": "a", **fields}).encode()


@pytest.mark.parametrize(
    ("weight", "kept", "note"),
    [
        (500, 256, "weight 500 is above 256, HAProxy's largest: 256 used"),
        (257, 256, "weight 257 is above 256, HAProxy's largest: 256 used"),
        (10**30, 256, "weight 10000000000000000000... is above 256, HAProxy's largest: 256 used"),
        (-1, None, "weight -1 is negative: not used"),
        (1.5, None, "weight is a float, not an integer: not used"),
        ("10", None, "weight is a str, not an integer: not used"),
        (True, None, "weight is a bool, not an integer: not used"),
        ([5], None, "weight is a list, not an integer: not used"),
    ],
)
def test_a_weight_that_is_not_an_integer_0_256_keeps_the_server(
    weight: object, kept: int | None, note: str
) -> None:
    reg = decode_nerve(record(weight=weight))
    assert (reg.host, reg.port, reg.name, reg.weight) == ("10.0.0.1", 80, "a", kept)
    assert reg.ignored == (note,)


@pytest.mark.parametrize("weight", [0, 1, 256, None])
def test_a_weight_0_256_is_kept_as_it_is_without_a_note(weight: int | None) -> None:
    reg = decode_nerve(record(weight=weight))
    assert (reg.weight, reg.ignored) == (weight, ())


def test_a_path_encoded_child_with_weight_1000_is_kept() -> None:
    data = json.dumps({"host": "10.0.0.1", "port": 80, "name": "a", "weight": 1000})
    encoded = base64.urlsafe_b64encode(data.encode()).decode()
    reg = decode_child_name(f"base64_{len(encoded)}_{encoded}_0000000001")
    assert reg is not None and reg.weight == 256


def test_use_nerve_weights_serves_a_weight_above_256_as_256() -> None:
    discovery = {"method": "zookeeper", "hosts": ["h:1"], "path": "/s"}
    cfg = ServiceConfig.model_validate(
        {"discovery": discovery, "haproxy": {"use_nerve_weights": True}}
    )
    heavy = Found(decode_nerve(record(name="heavy", weight=500)), "zk:/s/heavy_1")
    light = Found(decode_nerve(record(name="light", host="10.0.0.2", weight=10)), "zk:/s/l_2")
    servers = select_servers(cfg, [heavy, light], None).servers
    assert [(s.name, s.weight) for s in servers] == [
        ("heavy_10.0.0.1:80", 256),
        ("light_10.0.0.2:80", 10),
    ]


def test_labels_with_null_list_and_object_values_keep_the_server() -> None:
    labels = {"az": "us-east-1a", "owner": None, "roles": ["api", "web"], "meta": {"v": 1},
              "tier": 1, "canary": True}  # fmt: skip
    reg = decode_nerve(record(labels=labels))
    assert reg.labels == {
        "az": "us-east-1a",
        "roles": '["api","web"]',
        "meta": '{"v":1}',
        "tier": "1",
        "canary": "true",
    }
    assert reg.ignored == (
        "label 'owner' is null: dropped",
        "label 'roles' is a list: its JSON text is the value",
        "label 'meta' is an object: its JSON text is the value",
    )


def test_a_list_label_too_long_as_text_is_dropped_and_the_server_kept() -> None:
    reg = decode_nerve(record(labels={"az": "x", "hosts": ["h" * 100] * 3}))
    assert reg.labels == {"az": "x"}
    assert reg.ignored == ("label 'hosts' is a list longer than 256 as JSON text: dropped",)


def test_a_list_label_still_refuses_what_a_string_label_would() -> None:
    # (a control character is escaped by JSON; a line separator is not, and stays refused)
    with pytest.raises(InvalidRecord, match="control character"):
        decode_nerve(record(labels={"tags": ["a\u2028b"]}))


def test_every_note_of_a_record_is_kept_in_order() -> None:
    reg = decode_nerve(
        record(haproxy_server_options=["backup"], weight=300, labels={"owner": None})
    )
    assert reg.ignored == (
        "haproxy_server_options is a list, not a string",
        "weight 300 is above 256, HAProxy's largest: 256 used",
        "label 'owner' is null: dropped",
    )


def test_a_clamped_weight_is_logged_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    metrics = SynapseMetrics(CollectorRegistry())
    watcher = SimpleNamespace(metrics=metrics, service="web", method="zookeeper", noted_kinds=set())
    reg = decode_nerve(record(weight=500))
    note_ignored(watcher, "zookeeper:/s/a_0000000001", reg)  # type: ignore[arg-type]
    labels = {"service": "web", "method": "zookeeper"}
    assert metrics.registry.get_sample_value("synapse_ignored_record_fields_total", labels) == 1
    [logged] = [r for r in caplog.records if r.getMessage() == "record_field_ignored"]
    fields = getattr(logged, logs._FIELDS)
    assert fields["reason"] == "weight 500 is above 256, HAProxy's largest: 256 used"
    assert fields["effect"] == "server kept"


def test_a_fleet_of_heavy_records_logs_one_warning_per_kind(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A Ruby fleet whose records all say weight: 500 is normal: every record is counted,
    # one warning per kind of note (per watcher) says so, the rest are at debug level.
    metrics = SynapseMetrics(CollectorRegistry())
    watcher = SimpleNamespace(metrics=metrics, service="web", method="zookeeper", noted_kinds=set())
    caplog.set_level(logging.DEBUG, logger="synapse.watchers")
    for index in range(100):
        reg = decode_nerve(record(weight=300 + index))
        note_ignored(watcher, f"zookeeper:/s/i{index}_0000000001", reg)  # type: ignore[arg-type]
    note_ignored(watcher, "zookeeper:/s/x", decode_nerve(record(labels={"owner": None})))  # type: ignore[arg-type]
    labels = {"service": "web", "method": "zookeeper"}
    assert metrics.registry.get_sample_value("synapse_ignored_record_fields_total", labels) == 101
    notes = [r for r in caplog.records if r.getMessage() == "record_field_ignored"]
    warned = [getattr(r, logs._FIELDS)["reason"] for r in notes if r.levelno == logging.WARNING]
    assert warned == [
        "weight 300 is above 256, HAProxy's largest: 256 used",
        "label 'owner' is null: dropped",
    ]
    assert len(notes) == 101  # (the other 99 at debug level)
