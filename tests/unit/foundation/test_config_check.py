"""Bad input refused: empty files, near-miss keys ("did you mean"), --strict, no services,
unreachable nerve hosts. Pure logic plus the loaders (no daemons)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nerve.config import load_nerve_config
from smartstack.config_check import edit_distance, suggest
from smartstack.configfile import ConfigError
from synapse.config import load_synapse_config

NERVE_SERVICE = {"host": "10.0.0.1", "port": 80, "zk_hosts": ["h:2181"], "zk_path": "/s"}
SYNAPSE_HAPROXY = {"config_file_path": "/tmp/x.cfg", "reload_command": "true"}
SYNAPSE_SERVICE = {"discovery": {"method": "base"}}


def write(tmp_path: Path, name: str, content: object) -> Path:
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def errors_of(loader, *args) -> list[str]:
    with pytest.raises(ConfigError) as info:
        loader(*args)
    return info.value.lines


@pytest.mark.parametrize(
    ("a", "b", "distance"),
    [
        ("checks", "checks", 0),
        ("chekcs", "checks", 1),  # a swap of neighbours counts 1 (Damerau)
        ("timout", "timeout", 1),
        ("prot", "port", 1),
        ("chcks", "checks", 1),
        ("cheks", "checks", 1),
        ("chex", "checks", 3),  # over the limit: reported as limit + 1
        ("colour", "checks", 3),
    ],
)
def test_edit_distance(a: str, b: str, distance: int) -> None:
    assert edit_distance(a, b) == distance


def test_suggestions_pick_the_closest_and_keep_short_keys_strict() -> None:
    assert suggest("chekcs", ["checks", "check_interval", "host"]) == ("checks",)
    assert suggest("Check-Interval", ["checks", "check_interval"]) == ("check_interval",)
    assert suggest("timout", ["timeout", "rise"]) == ("timeout",)
    assert suggest("ur", ["uri", "url_x"]) == ("uri",)
    # Keys of 4 letters or fewer get distance 1 only: 'zone' is not a typo of 'node' ...
    assert suggest("zane", ["node"]) == ()
    # ... while one letter off still is.
    assert suggest("prot", ["port"]) == ("port",)
    assert suggest("colour", ["checks", "host", "port"]) == ()
    assert suggest("hots", ["host", "hosts"]) == ("host", "hosts")


@pytest.mark.parametrize(
    ("service", "loc", "meant"),
    [
        ({"chekcs": [{"type": "tcp"}]}, "services.web.chekcs", "'checks'"),
        ({"checks": [{"type": "tcp", "timout": 2}]}, "services.web.checks[0].timout", "'timeout'"),
        ({"chek_interval": 1}, "services.web.chek_interval", "'check_interval'"),
        ({"wieght": 3}, "services.web.wieght", "'weight'"),
    ],
)
def test_nerve_near_miss_keys_are_errors(
    tmp_path: Path, service: dict, loc: str, meant: str
) -> None:
    path = write(
        tmp_path, "n.json", {"instance_id": "a", "services": {"web": {**NERVE_SERVICE, **service}}}
    )
    assert errors_of(load_nerve_config, path) == [
        f"{path}: {loc}: unknown key, did you mean {meant}?"
    ]


def test_synapse_near_miss_keys_are_errors(tmp_path: Path) -> None:
    services = {"web": {**SYNAPSE_SERVICE, "haproxy": {"prot": 3213}}}
    path = write(
        tmp_path,
        "s.json",
        {"haproxy": {**SYNAPSE_HAPROXY, "restart_intervall": 1}, "services": services},
    )
    assert errors_of(load_synapse_config, path) == [
        f"{path}: services.web.haproxy.prot: unknown key, did you mean 'port'?",
        f"{path}: haproxy.restart_intervall: unknown key, did you mean 'restart_interval'?",
    ]


def test_near_miss_in_service_conf_dir_names_that_file(tmp_path: Path) -> None:
    (tmp_path / "svc").mkdir()
    bad = write(tmp_path / "svc", "api.json", {**NERVE_SERVICE, "chekcs": []})
    path = write(
        tmp_path, "n.json", {"instance_id": "a", "service_conf_dir": str(tmp_path / "svc")}
    )
    assert errors_of(load_nerve_config, path) == [
        f"{bad}: services.api.chekcs: unknown key, did you mean 'checks'?"
    ]


def test_far_unknown_keys_warn_and_strict_refuses_them(tmp_path: Path) -> None:
    doc = {"instance_id": "a", "colour": "blue", "services": {"w": {**NERVE_SERVICE, "zone": 1}}}
    path = write(tmp_path, "n.json", doc)
    _, warnings = load_nerve_config(path)
    assert warnings == [
        f"{path}: colour: unknown key, ignored",
        f"{path}: services.w.zone: unknown key, ignored",
    ]
    assert errors_of(load_nerve_config, path, None, True) == [
        f"{path}: colour: unknown key (refused by --strict)",
        f"{path}: services.w.zone: unknown key (refused by --strict)",
    ]


def test_airbnb_keys_warn_with_what_was_meant(tmp_path: Path) -> None:
    # 'label' (an Airbnb label_filters key) typed for 'labels' in a nerve service: never an
    # error (Airbnb files load), but the warning says what was meant: a service whose
    # record loses its labels is dropped by every synapse label_filters.
    nerve = write(
        tmp_path, "n.json", {"instance_id": "a", "services": {"w": {**NERVE_SERVICE, "label": "x"}}}
    )
    _, warnings = load_nerve_config(nerve)
    assert warnings == [f"{nerve}: services.w.label: unknown key, ignored; did you mean 'labels'?"]
    # Airbnb keys we accept without acting on them stay silent, even in strict mode.
    quiet = write(
        tmp_path, "q.json", {"instance_id": "a", "statsd": {}, "services": {"w": NERVE_SERVICE}}
    )
    assert load_nerve_config(quiet, None, True)[1] == []


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n# and another\n", "{}", "---\n"])
@pytest.mark.parametrize("loader", [load_nerve_config, load_synapse_config])
def test_empty_files_are_refused(tmp_path: Path, text: str, loader) -> None:
    path = write(tmp_path, "c.yaml", text)
    assert errors_of(loader, path) == [f"{path}: the file is empty (no keys, or only comments)"]


def test_empty_file_is_refused_even_with_instance_id_from_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NERVE_INSTANCE_ID", "i-1")
    path = write(tmp_path, "c.yaml", "# nothing\n")
    assert "the file is empty" in errors_of(load_nerve_config, path)[0]


def test_no_services_is_refused(tmp_path: Path) -> None:
    syn = write(tmp_path, "s.json", {"haproxy": SYNAPSE_HAPROXY, "services": {}})
    assert errors_of(load_synapse_config, syn) == [
        f"{syn}: services: no services; specify a map of services in 'services' "
        "(or 'service_conf_dir')"
    ]
    nerve = write(tmp_path, "n.json", {"instance_id": "a"})
    assert errors_of(load_nerve_config, nerve) == [
        f"{nerve}: services: no services; specify a map of services in 'services' "
        "(or 'service_conf_dir', 'docker')"
    ]


def test_an_empty_service_conf_dir_is_a_warning(tmp_path: Path) -> None:
    (tmp_path / "svc").mkdir()
    path = write(
        tmp_path, "n.json", {"instance_id": "a", "service_conf_dir": str(tmp_path / "svc")}
    )
    config, warnings = load_nerve_config(path)
    assert config.services == {}
    assert warnings == [
        f"{path}: service_conf_dir {tmp_path / 'svc'}: no service files yet, nothing to do"
    ]


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "0:0::0"])
def test_nerve_refuses_unspecified_host(tmp_path: Path, host: str) -> None:
    path = write(
        tmp_path, "n.json", {"instance_id": "a", "services": {"w": {**NERVE_SERVICE, "host": host}}}
    )
    [line] = errors_of(load_nerve_config, path)
    assert line.startswith(f"{path}: services.w.host: host {host!r} is the unspecified address")
    assert "routable IP address or DNS name" in line


def test_the_walk_skips_only_fields_that_cannot_hold_a_model_a_dict_or_a_list() -> None:
    import enum
    import typing

    from pydantic import BaseModel

    from smartstack.config_check import _may_nest

    class Color(enum.Enum):
        RED = "red"

    old_union = typing.Union[bool, None]  # noqa: UP007 (pydantic may keep typing.Union)
    leaves = [str, int, float | None, old_union, typing.Literal["a", "b"], Color,
              typing.Annotated[str, "meta"], str | int | None]  # fmt: skip
    assert not any(_may_nest(t) for t in leaves)
    nesting = [dict[str, int], list[str], str | list[str], typing.Any, BaseModel | None,
               BaseModel, tuple[int, ...], "Forward", typing.Annotated[dict, "x"]]  # fmt: skip
    assert all(_may_nest(t) for t in nesting)


@pytest.mark.parametrize(
    ("method", "meant"),
    [("zookeper", ", did you mean 'zookeeper'?"), ("ETCD", ", did you mean 'etcd'?"), ("s3", "")],
)
def test_a_mistyped_choice_names_the_likely_one(tmp_path: Path, method: str, meant: str) -> None:
    services = {"web": {"discovery": {"method": method}}}
    path = write(tmp_path, "s.json", {"haproxy": SYNAPSE_HAPROXY, "services": services})
    [line] = errors_of(load_synapse_config, path)
    assert line.startswith(f"{path}: services.web.discovery.method: Input should be 'base', ")
    assert line.endswith(f"(got '{method}'){meant}")


def test_a_misplaced_airbnb_key_names_where_airbnb_reads_it(tmp_path: Path) -> None:
    service = {**SYNAPSE_SERVICE, "haproxy": {"backend_port_override": 8080}}
    path = write(tmp_path, "s.json", {"services": {"web": service}, "haproxy": SYNAPSE_HAPROXY})
    _, warnings = load_synapse_config(path)
    assert warnings == [
        f"{path}: services.web.haproxy.backend_port_override: unknown key, ignored; "
        "Airbnb reads it under services.web"
    ]


def test_airbnb_keys_at_airbnb_levels_stay_plain_warnings(tmp_path: Path) -> None:
    # Airbnb's keys where Airbnb reads them (ones we do not implement): no hint at all.
    discovery = {"method": "base", "tag_name": "x", "polling_interval_sec": 5}
    service = {"discovery": discovery, "leader_election": False}
    path = write(tmp_path, "s.json", {"services": {"web": service}, "haproxy": SYNAPSE_HAPROXY})
    _, warnings = load_synapse_config(path)
    assert all(w.endswith("unknown key, ignored") for w in warnings), warnings
