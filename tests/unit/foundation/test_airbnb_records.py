"""Issue 11, records: Yelp-style label keys and non-string options, as Ruby synapse reads them."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from prometheus_client import CollectorRegistry

from smartstack import logs
from smartstack.record import InvalidRecord, decode_nerve
from synapse.config import ServiceConfig
from synapse.metrics import SynapseMetrics
from synapse.model import Found
from synapse.selection import select_servers
from synapse.watchers.record_notes import note_ignored


def record(**fields: object) -> bytes:
    return json.dumps({"host": "10.0.0.1", "port": 80, "name": "a", **fields}).encode()


def test_label_keys_with_colons_and_printable_characters_are_kept() -> None:
    labels = {"region:my_region": "uswest1", "habitat:my_habitat": "uswest1a", "a b/c=d": "x"}
    assert decode_nerve(record(labels=labels)).labels == labels


@pytest.mark.parametrize(
    ("labels", "reason"),
    [
        ({"": "x"}, "non-empty"),
        ({"region\x1b[0m": "x"}, "control character"),
        ({"k" * 129: "x"}, "longer than 128"),
        ({str(i): "x" for i in range(65)}, "more than 64 labels"),
    ],
)
def test_label_keys_refused_only_for_control_characters_and_sizes(
    labels: dict[str, str], reason: str
) -> None:
    with pytest.raises(InvalidRecord, match=reason):
        decode_nerve(record(labels=labels))


def service(*filters: dict[str, str]) -> ServiceConfig:
    discovery = {"method": "zookeeper", "hosts": ["h:1"], "path": "/s", "label_filters": filters}
    return ServiceConfig.model_validate({"discovery": discovery})


def test_label_filters_on_yelp_style_keys() -> None:
    found = [
        Found(decode_nerve(record(name="west", labels={"region:my_region": "uswest1"})), "zk:1"),
        Found(decode_nerve(record(name="east", labels={"region:my_region": "useast1"})), "zk:2"),
        Found(decode_nerve(record(name="none")), "zk:3"),
    ]
    equals = select_servers(service({"label": "region:my_region", "value": "uswest1"}), found, None)
    assert [s.name for s in equals.servers] == ["west_10.0.0.1:80"]
    not_equals = service(
        {"label": "region:my_region", "value": "uswest1", "condition": "not-equals"}
    )
    assert [s.name for s in select_servers(not_equals, found, None).servers] == [
        "east_10.0.0.1:80",
        "none_10.0.0.1:80",
    ]


@pytest.mark.parametrize(
    ("options", "kind"), [({"weight": 5}, "an object"), (["backup"], "a list"), (5, "a int")]
)
def test_non_string_server_options_keep_the_server(options: object, kind: str) -> None:
    reg = decode_nerve(record(haproxy_server_options=options))
    assert (reg.host, reg.port, reg.haproxy_server_options) == ("10.0.0.1", 80, None)
    assert reg.ignored == (f"haproxy_server_options is {kind}, not a string",)
    assert decode_nerve(record(haproxy_server_options="backup")).ignored == ()


def test_ignored_fields_are_logged_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    metrics = SynapseMetrics(CollectorRegistry())
    watcher = SimpleNamespace(metrics=metrics, service="web", method="zookeeper", noted_kinds=set())
    reg = decode_nerve(record(haproxy_server_options={"weight": 5}))
    note_ignored(watcher, "zookeeper:/s/a_0000000001", reg)  # type: ignore[arg-type]
    note_ignored(watcher, "zookeeper:/s/b", decode_nerve(record()))  # type: ignore[arg-type]
    labels = {"service": "web", "method": "zookeeper"}
    sample = metrics.registry.get_sample_value("synapse_ignored_record_fields_total", labels)
    assert sample == 1.0
    [logged] = [r for r in caplog.records if r.getMessage() == "record_field_ignored"]
    fields = getattr(logged, logs._FIELDS)
    assert fields["origin"] == "zookeeper:/s/a_0000000001"
    assert fields["reason"] == "haproxy_server_options is an object, not a string"
