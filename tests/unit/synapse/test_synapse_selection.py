"""From found registrations to a service's servers: Airbnb's per-service keys."""

from __future__ import annotations

from typing import Any

from smartstack.record import Registration
from synapse.config import RegistryServerOptions, ServiceConfig
from synapse.model import Found
from synapse.selection import (
    ORIGIN_DEFAULT,
    ORIGIN_DISCOVERY,
    ORIGIN_NONE,
    ORIGIN_PREVIOUS,
    ORIGIN_STATE_FILE,
    labels_match,
    select_servers,
)


def service(**extra: Any) -> ServiceConfig:
    doc: dict[str, Any] = {"discovery": {"method": "zookeeper", "hosts": ["h:1"], "path": "/s"}}
    doc.update(extra)
    return ServiceConfig.model_validate(doc)


def found(host: str, port: int, name: str, **fields: Any) -> Found:
    return Found(Registration(host=host, port=port, name=name, **fields), f"zk:/s/{name}")


DEFAULTS = [{"name": "fallback", "host": "127.0.0.9", "port": 9000}]


def names(selection) -> list[str]:
    return [s.name for s in selection.servers]


def test_discovered_servers_get_stable_names_and_records() -> None:
    sel = select_servers(service(), [found("10.0.0.1", 80, "a"), found("10.0.0.2", 80, "b")], None)
    assert sel.origin == ORIGIN_DISCOVERY
    assert names(sel) == ["a_10.0.0.1:80", "b_10.0.0.2:80"]
    assert sel.records[0] == {"host": "10.0.0.1", "port": 80, "name": "a"}
    assert sel.servers[0].origin == "zk:/s/a"


def test_duplicates_collapse_to_one_server() -> None:
    sel = select_servers(service(), [found("10.0.0.1", 80, "a"), found("10.0.0.1", 80, "a")], None)
    assert names(sel) == ["a_10.0.0.1:80"]


def test_backend_port_override_applies_to_discovered_servers() -> None:
    sel = select_servers(service(backend_port_override=7000), [found("10.0.0.1", 80, "a")], None)
    assert (sel.servers[0].port, sel.records[0]["port"]) == (7000, 7000)
    assert sel.servers[0].name == "a_10.0.0.1:7000"


def test_empty_discovery_falls_back_to_default_servers() -> None:
    sel = select_servers(service(default_servers=DEFAULTS), [], None)
    assert sel.origin == ORIGIN_DEFAULT
    assert names(sel) == ["fallback_127.0.0.9:9000"]


def test_keep_default_servers_adds_defaults_beside_discovered() -> None:
    cfg = service(default_servers=DEFAULTS, keep_default_servers=True)
    sel = select_servers(cfg, [found("10.0.0.1", 80, "a")], None)
    assert names(sel) == ["a_10.0.0.1:80", "fallback_127.0.0.9:9000"]
    assert sel.origin == ORIGIN_DISCOVERY


def test_use_previous_backends_keeps_the_last_list_when_discovery_empties() -> None:
    cfg = service()
    first = select_servers(cfg, [found("10.0.0.1", 80, "a")], None)
    kept = select_servers(cfg, [], first)
    assert names(kept) == ["a_10.0.0.1:80"]
    assert kept.origin == ORIGIN_PREVIOUS


def test_without_use_previous_backends_an_empty_discovery_empties_the_service() -> None:
    cfg = service(use_previous_backends=False)
    first = select_servers(cfg, [found("10.0.0.1", 80, "a")], None)
    assert select_servers(cfg, [], first).servers == ()


def test_nothing_known_yet_is_origin_none() -> None:
    assert select_servers(service(), None, None).origin == ORIGIN_NONE


def test_state_file_origin_is_kept() -> None:
    sel = select_servers(service(), [found("10.0.0.1", 80, "a")], None, origin=ORIGIN_STATE_FILE)
    assert sel.origin == ORIGIN_STATE_FILE


def test_label_filters_equals_and_not_equals() -> None:
    cfg = service(
        discovery={
            "method": "zookeeper", "hosts": ["h:1"], "path": "/s",
            "label_filters": [
                {"label": "zone", "value": "az1"},
                {"label": "canary", "value": "true", "condition": "not-equals"},
            ],
        }
    )  # fmt: skip
    records = [
        found("10.0.0.1", 80, "a", labels={"zone": "az1"}),
        found("10.0.0.2", 80, "b", labels={"zone": "az2"}),
        found("10.0.0.3", 80, "c", labels={"zone": "az1", "canary": "true"}),
        found("10.0.0.4", 80, "d"),
    ]
    assert names(select_servers(cfg, records, None)) == ["a_10.0.0.1:80"]


def test_labels_match_without_filters() -> None:
    assert labels_match({}, [])


def test_weights_only_with_use_nerve_weights() -> None:
    records = [found("10.0.0.1", 80, "a", weight=7)]
    assert select_servers(service(), records, None).servers[0].weight is None
    cfg = service(haproxy={"use_nerve_weights": True})
    assert select_servers(cfg, records, None).servers[0].weight == 7


def test_registry_server_options_only_when_allowed_and_whitelisted() -> None:
    records = [found("10.0.0.1", 80, "a", haproxy_server_options="backup track x/y")]
    assert select_servers(service(), records, None).servers[0].registry_options == ""
    denied = RegistryServerOptions(allow=False)
    assert select_servers(service(), records, None, denied).servers[0].registry_options == ""
    allowed = RegistryServerOptions(allow=True)
    sel = select_servers(service(), records, None, allowed)
    assert sel.servers[0].registry_options == "backup"
    assert sel.dropped_options and "track" in sel.dropped_options[0]


def test_discovered_records_are_built_from_the_registrations_not_kept() -> None:
    """Memory: a selection holds each server's registration, not a dict per server."""
    item = found("10.0.0.1", 80, "a", weight=3, labels={"az": "1"})
    sel = select_servers(service(backend_port_override=7000), [item], None)
    assert sel.sources == (item.registration,)
    assert sel.records == (
        {"host": "10.0.0.1", "port": 7000, "name": "a", "weight": 3, "labels": {"az": "1"}},
    )
    assert sel.records[0] is not sel.records[0]  # a fresh dict each time: callers may change it


def test_a_registration_kept_keeps_its_server_object() -> None:
    # A change touches one record of a service: the others' servers are not built again,
    # unless what they are made from (the config, the options policy, the origin) changed.
    cfg, a, b = service(), found("10.0.0.1", 80, "a"), found("10.0.0.2", 80, "b")
    first = select_servers(cfg, [a, b], None)
    second = select_servers(cfg, [a, found("10.0.0.2", 81, "b")], first)
    assert second.servers[0] is first.servers[0] and second.servers[1] != first.servers[1]
    assert select_servers(service(), [a, b], first).servers[0] is not first.servers[0]
    policy = RegistryServerOptions(allow=True, keywords=["maxconn"])
    assert select_servers(cfg, [a, b], first, policy).servers[0] is not first.servers[0]
    moved = Found(a.registration, "zk:/s/elsewhere")
    assert select_servers(cfg, [moved], first).servers[0].origin == "zk:/s/elsewhere"
    # kept by use_previous_backends, then discovered again: still the same objects
    kept = select_servers(service(use_previous_backends=True), [], first)
    assert select_servers(cfg, [a, b], kept).servers[0] is first.servers[0]


def test_not_heard_from_yet_keeps_the_discovered_servers_not_the_defaults() -> None:
    """A SIGHUP's new watcher has not reported (found None): the previous list stays, not
    default_servers alone; keep_default_servers re-joins the defaults the config has now."""
    cfg = service(default_servers=DEFAULTS)
    other = [{"name": "other", "host": "127.0.0.8", "port": 9000}]
    first = select_servers(cfg, [found("10.0.0.1", 80, "a")], None)
    kept = select_servers(cfg, None, first)
    assert names(kept) == ["a_10.0.0.1:80"] and kept.origin == ORIGIN_PREVIOUS
    joined = select_servers(service(default_servers=DEFAULTS, keep_default_servers=True), None,
                            select_servers(cfg, [found("10.0.0.1", 80, "a")], None))  # fmt: skip
    assert names(joined) == ["a_10.0.0.1:80", "fallback_127.0.0.9:9000"]
    now = service(default_servers=other, keep_default_servers=True)
    assert names(select_servers(now, None, joined)) == ["a_10.0.0.1:80", "other_127.0.0.8:9000"]
    # never heard from, or nothing discovered before: the defaults, as before
    assert select_servers(cfg, None, None).origin == ORIGIN_DEFAULT
    only_defaults = select_servers(cfg, [], None)
    again = select_servers(service(default_servers=other), None, only_defaults)
    assert names(again) == ["other_127.0.0.8:9000"] and again.origin == ORIGIN_DEFAULT
    # a state file's servers that aged out are not kept in place of the defaults
    cached = select_servers(cfg, [found("10.0.0.1", 80, "a")], None, origin=ORIGIN_STATE_FILE)
    assert names(select_servers(cfg, None, cached)) == ["fallback_127.0.0.9:9000"]
