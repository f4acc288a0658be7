"""Ruby nerve's service keys nerve used to refuse: a weight above 256, labels and check
headers written as YAML numbers or booleans, rate_limiting without all of its keys."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from nerve.assemble import build_service
from nerve.checks import build_checks
from nerve.config import UNLIMITED_BURST, ServiceConfig, load_nerve_config
from nerve.maintenance import MaintenanceStore
from nerve.metrics import NerveMetrics
from nerve.ratelimit import TokenBucket
from nerve.registries import registration_for
from smartstack.configfile import ConfigError
from smartstack.record import decode_nerve, encode

ZK = {"host": "10.0.0.5", "port": 8080, "zk_hosts": ["z:2181"], "zk_path": "/s"}


def service(**extra: object) -> ServiceConfig:
    return ServiceConfig.model_validate({**ZK, **extra})


@pytest.mark.parametrize(("weight", "written"), [(500, 256), (257, 256), (256, 256), (0, 0)])
def test_any_non_negative_weight_is_accepted_and_the_record_says_at_most_256(
    weight: int, written: int
) -> None:
    cfg = service(weight=weight)
    assert cfg.weight == weight
    record = registration_for("i-1", cfg)
    assert record.weight == written
    assert decode_nerve(encode(record)).ignored == ()  # what every synapse keeps as it is


def test_a_negative_weight_is_still_refused() -> None:
    with pytest.raises(ValueError, match="greater than or equal to 0"):
        service(weight=-1)


def test_a_weight_above_256_is_warned_about_at_load(tmp_path: Path) -> None:
    doc = {"instance_id": "i-1", "services": {"web": {**ZK, "weight": 500}, "db": ZK}}
    path = tmp_path / "nerve.json"
    path.write_text(json.dumps(doc))
    config, warnings = load_nerve_config(path)
    assert config.services["web"].weight == 500
    assert warnings == [
        f"{path}: services.web.weight: 500 is above 256, HAProxy's largest server weight: "
        "the record says 256"
    ]


def test_docker_service_defaults_weight_above_256_is_warned_about(tmp_path: Path) -> None:
    defaults = {"zk_hosts": ["z:2181"], "zk_path": "/s/{service}", "weight": 300}
    path = tmp_path / "nerve.json"
    path.write_text(json.dumps({"instance_id": "i-1", "docker": {"service_defaults": defaults}}))
    _, warnings = load_nerve_config(path)
    assert warnings == [
        f"{path}: docker.service_defaults.weight: 300 is above 256, HAProxy's largest server "
        "weight: the record says 256"
    ]


def test_labels_written_as_numbers_and_booleans_are_registered_as_ruby_nerve_writes_them() -> None:
    # Ruby nerve copies labels as they are, and Ruby synapse's label_filters compare with
    # Ruby's == ("true" != true): a record with the text would miss a fleet's filters.
    labels = {"tier": 1, "canary": True, "ratio": 0.5, "az": "us-east-1a"}
    cfg = service(labels=labels)
    assert cfg.labels == labels
    written = encode(registration_for("i-1", cfg))
    ruby = (
        b'{"host":"10.0.0.5","port":8080,"name":"i-1",'
        b'"labels":{"tier":1,"canary":true,"ratio":0.5,"az":"us-east-1a"}}'
    )
    assert written == ruby
    assert json.loads(written)["labels"]["canary"] is True
    # our synapse reads both as the text it compares its label_filters with
    assert decode_nerve(written).labels == {
        "tier": "1",
        "canary": "true",
        "ratio": "0.5",
        "az": "us-east-1a",
    }


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 10**300])
def test_a_label_number_json_cannot_carry_or_too_long_is_refused(value: float) -> None:
    with pytest.raises(ValueError, match="label 'tier'"):
        service(labels={"tier": value})


def test_a_label_without_a_value_is_left_out_of_the_record() -> None:
    cfg = service(labels={"az": "a", "owner": None})
    assert registration_for("i-1", cfg).labels == {"az": "a"}


def test_labels_written_as_lists_or_objects_are_registered_as_ruby_nerve_writes_them() -> None:
    labels = {"roles": ["api", "web"], "meta": {"team": "core"}}
    written = encode(registration_for("i-1", service(labels=labels)))
    assert json.loads(written)["labels"] == labels  # (Ruby nerve: JSON of the value as is)
    # our synapse reads them as their JSON text, as it reads a Ruby nerve's record
    assert decode_nerve(written).labels == {"roles": '["api","web"]', "meta": '{"team":"core"}'}


@pytest.mark.parametrize(
    "value", ["v" * 250, ["v" * 60] * 4, {"k": "\u00e9" * 120}], ids=["text", "list", "object"]
)
def test_labels_whose_record_no_synapse_would_read_are_refused_at_load(value: object) -> None:
    """64 labels, each within its own limit: the record over MAX_RECORD_BYTES, which every
    synapse skips as bad (registered, never served: review cr36-airbnb)."""
    labels = {f"label-{n:02d}": value for n in range(64)}
    with pytest.raises(ValueError, match="over the 16384 every synapse reads"):
        service(labels=labels)
    fits = service(labels=dict(list(labels.items())[:16]))  # (a quarter of them fits)
    assert len(encode(registration_for("i" * 128, fits))) <= 16384


def test_a_label_value_json_cannot_carry_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "nerve.yaml"
    path.write_text(
        "instance_id: i-1\nservices:\n  web: {host: 10.0.0.5, port: 8080, zk_hosts: [z],"
        " zk_path: /s, labels: {released: 2024-01-01}}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_nerve_config(path)
    assert caught.value.lines == [
        f"{path}: services.web: the record nerve would register is invalid: label 'released'"
        " must be a string, number, boolean, list or object"
    ]


def test_http_check_headers_written_as_numbers_are_sent_as_text() -> None:
    check = {"type": "http", "uri": "/health", "headers": {"X-Retries": 3, "X-Canary": True}}
    cfg = service(checks=[check])
    assert cfg.checks[0].headers == {"X-Retries": "3", "X-Canary": "true"}
    [built] = build_checks(cfg)
    assert ("X-Retries", "3") in built.head and ("X-Canary", "true") in built.head


def built(rate_limiting: dict[str, object]) -> TokenBucket | None:
    """The token bucket nerve builds for a service with this ``rate_limiting``."""
    reporter = SimpleNamespace(desired=False, holding=False, stall=None, verdict_at=None)
    svc = build_service(
        "web",
        service(rate_limiting=rate_limiting),
        instance_id="i-1",
        registries=None,  # type: ignore[arg-type]
        metrics=NerveMetrics(),
        store=MaintenanceStore(None),
        reporter=reporter,  # type: ignore[arg-type]
    )
    return svc.state.bucket


@pytest.mark.parametrize(
    "rate_limiting",
    [{}, {"shadow_mode": False}, {"max_burst": 5}, {"average_rate": float("inf")}],
)
def test_rate_limiting_without_average_rate_limits_nothing(
    rate_limiting: dict[str, object],
) -> None:
    # Ruby: average_rate defaults to infinity, and an infinite rate lets every change by
    assert built(rate_limiting) is None


@pytest.mark.parametrize("max_burst", [None, float("inf")])
def test_rate_limiting_without_max_burst_has_a_cap_never_reached(max_burst: float | None) -> None:
    limits: dict[str, object] = {"average_rate": 2, "shadow_mode": False}
    if max_burst is not None:
        limits["max_burst"] = max_burst
    bucket = built(limits)
    assert bucket is not None and bucket.max_burst == UNLIMITED_BURST
    assert bucket.average_rate == 2
    # a day idle refills 172,800 tokens (Ruby: unbounded), all of them usable at once, and
    # the 2 it started with (average_rate)
    # (a quarter second more: start is the monotonic clock, and (start + 86,400) - start
    # can round to just under a day, one token short: the test failed on some clocks)
    a_day_later = bucket._last_refill + 86_400.25
    assert all(bucket.consume(a_day_later) for _ in range(172_802))
    assert not bucket.consume(a_day_later)


def test_rate_limiting_with_every_key_is_as_before() -> None:
    bucket = built({"average_rate": 0.5, "max_burst": 3})
    assert bucket is not None and (bucket.average_rate, bucket.max_burst) == (0.5, 3)


@pytest.mark.parametrize(
    ("check", "timeout"),
    [
        # Ruby (http.rb): the connect gets open_timeout (default 0.2), the answer read_timeout
        ({"read_timeout": 2}, 2.2),
        ({"read_timeout": 2, "open_timeout": 0.5}, 2.5),
        ({"read_timeout": 0.05, "timeout": 1}, 1.0),  # never shorter than timeout
        ({}, 0.1),
    ],
)
def test_an_http_check_read_timeout_gives_the_answer_as_long_as_ruby_nerve(
    check: dict[str, float], timeout: float
) -> None:
    cfg = service(checks=[{"type": "http", "uri": "/health", **check}])
    [built] = build_checks(cfg)
    assert built.timeout == pytest.approx(timeout)


def test_read_timeout_is_an_airbnb_key_not_an_unknown_one(tmp_path: Path) -> None:
    check = {"type": "http", "uri": "/health", "read_timeout": 2}
    path = tmp_path / "nerve.json"
    path.write_text(
        json.dumps({"instance_id": "i-1", "services": {"web": {**ZK, "checks": [check]}}})
    )
    config, warnings = load_nerve_config(path)
    assert warnings == []
    assert config.services["web"].checks[0].timeout == pytest.approx(2.2)
