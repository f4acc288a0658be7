"""The zone routing contract in synapse's config: `zone`, `zone_routing`, `admin.token_file`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from smartstack.configfile import ConfigError
from synapse.config import load_synapse_config
from synapse.zone_config import ZoneRouting, check_zone_backend_names

BASE = {"services": {"web": {"discovery": {"method": "base"}}}}


def write(tmp_path: Path, doc: dict) -> Path:
    path = tmp_path / "synapse.json"
    path.write_text(json.dumps(doc))
    return path


def with_routing(routing: object) -> dict:
    return {"services": {"web": {"discovery": {"method": "base"}, "zone_routing": routing}}}


def test_defaults_of_zone_routing(tmp_path: Path) -> None:
    config, warnings = load_synapse_config(write(tmp_path, with_routing({})))
    assert warnings == []
    assert config.services["web"].zone_routing == ZoneRouting(
        label="zone", min_local=1, spill="even", sticky=None, header=None,
        zone_of_address={}, evacuate=[], zones=[],
    )  # fmt: skip
    assert config.zone is None
    plain, _ = load_synapse_config(write(tmp_path, BASE))
    assert plain.services["web"].zone_routing is None


def test_every_key_of_zone_routing_loads(tmp_path: Path) -> None:
    # sticky, header and zone_of_address need a frontend: tests/unit/synapse/test_zone_signals.py
    routing = {
        "label": "az", "min_local": 2, "spill": "weighted", "sticky": None,
        "header": None, "zone_of_address": {},
        "evacuate": ["az3"], "zones": ["az1", "az2", "az3"],
    }  # fmt: skip
    config, _ = load_synapse_config(write(tmp_path, {**with_routing(routing), "zone": "az1"}))
    loaded = config.services["web"].zone_routing
    assert loaded is not None and loaded.model_dump() == routing
    assert config.zone == "az1"


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ({**BASE, "zone": "az 1"}, "zone: 'az 1' is not a zone name"),
        ({**BASE, "zone": "a" * 65}, "is not a zone name"),
        (with_routing({"min_local": -1}), "zone_routing.min_local: Input should be greater"),
        (with_routing({"spill": "random"}), "zone_routing.spill: Input should be 'even'"),
        (with_routing({"sticky": "a b"}), "zone_routing.sticky: 'a b' is not a usable name"),
        (with_routing({"header": "X:Zone"}), "zone_routing.header: 'X:Zone' is not"),
        (with_routing({"evacuate": ["az1", "az1"]}), "zone_routing.evacuate: lists a zone twice"),
        (with_routing({"zones": ["ok", "no;"]}), "zone_routing.zones: [1] 'no;' is not a zone"),
        (with_routing({"zone_of_address": {"lb": "az1"}}), "key 'lb' is not an IP address"),
        (with_routing({"zone_of_address": {"127.0.0.1": "a/b"}}), "zone of 127.0.0.1 'a/b'"),
        (
            with_routing({"zones": ["az1"], "evacuate": ["az2"]}),
            "zone_routing: zones ['az2'] are used but not listed in 'zones'",
        ),
        (with_routing({"label": ""}), "zone_routing.label: String should have at least 1"),
    ],
)
def test_bad_zone_config_names_file_key_and_expectation(
    tmp_path: Path, doc: dict, expected: str
) -> None:
    path = write(tmp_path, doc)
    with pytest.raises(ConfigError) as caught:
        load_synapse_config(path)
    text = "\n".join(caught.value.lines)
    assert text.startswith(f"{path}: ")
    assert expected in text, text


def test_zone_precedence_cli_over_env_over_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, {**BASE, "zone": "from-file"})
    monkeypatch.delenv("SYNAPSE_ZONE", raising=False)
    assert load_synapse_config(path)[0].zone == "from-file"
    monkeypatch.setenv("SYNAPSE_ZONE", "from-env")
    assert load_synapse_config(path)[0].zone == "from-env"
    assert load_synapse_config(path, zone="from-cli")[0].zone == "from-cli"
    monkeypatch.setenv("SYNAPSE_ZONE", "bad zone")
    with pytest.raises(ConfigError, match="'bad zone' is not a zone name"):
        load_synapse_config(path)


def test_zone_flag_of_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from synapse.cli import main

    path = write(tmp_path, BASE)
    assert main(["-c", str(path), "-k", "--zone", "az1"]) == 0
    with pytest.raises(SystemExit) as refused:
        main(["-c", str(path), "-k", "--zone", "a;b"])
    assert refused.value.code == 2
    assert "zone: 'a;b' is not a zone name" in capsys.readouterr().err


def test_admin_token_file_must_hold_a_token(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    config, _ = load_synapse_config(write(tmp_path, {**BASE, "admin": {"token_file": str(token)}}))
    assert config.admin.token_file == str(token)
    for content, expected in (
        (None, "cannot read"),
        ("", "empty"),
        ("a b", "the token must be one word"),
    ):
        if content is None:
            token.unlink()
        else:
            token.write_text(content)
        path = write(tmp_path, {**BASE, "admin": {"token_file": str(token)}})
        with pytest.raises(ConfigError) as caught:
            load_synapse_config(path)
        assert f"{path}: admin.token_file: {token}: {expected}" in caught.value.lines[0]


def test_two_services_zone_backends_must_not_share_a_name() -> None:
    # a + zone b_zone_c and a_zone_b + zone c both make a_zone_b_zone_c
    routed = {"a": ZoneRouting(zones=["b_zone_c"]), "a_zone_b": ZoneRouting(zones=["c"])}
    with pytest.raises(ValueError, match="is the backend of zone b_zone_c of service 'a'"):
        check_zone_backend_names({"a": "a", "a_zone_b": "a_zone_b"}, routed)


def test_a_zone_backend_config_dumps_like_a_validated_one() -> None:
    """zone_service_config marks every kept field as set: a dump of the fields set works
    on pydantic models too (it passed a dict as the set once: pydantic's dump failed)."""
    from synapse.config import ServiceConfig
    from synapse.zone_backends import zone_service_config

    config = ServiceConfig.model_validate({
        "discovery": {"method": "zookeeper", "hosts": ["h:1"], "path": "/web"},
        "haproxy": {"port": 3300, "server_options": "check"},
    })  # fmt: skip
    haproxy = zone_service_config(config, "web_az1").haproxy
    dumped = haproxy.model_dump(exclude_unset=True)
    assert dumped["backend_name"] == "web_az1" and dumped["server_options"] == "check"
    assert "port" not in dumped  # a frontend key: the zone backend has none
