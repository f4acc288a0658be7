"""The note ``synapse -k`` gives for zone-routed HTTP services HAProxy checks by a connect
only (synapse/zone_check_note.py): a hung local zone (accepts, never answers) passes that
check and ``observe layer4``, so HAProxy never fails over and every request sent to it
fails (review s27, ``s8_hung.py tcp open``: 618 of 618 in a 15 s hang, 504 after 5 s each).
Before, ``-k`` said nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from haproxy_helpers import managed_config

from synapse.config import ServiceConfig
from synapse.zone_check_note import hung_zone_note

HTTP = ["mode http", "timeout connect 1s", "timeout client 30s", "timeout server 30s"]


def _service(zoned: bool = True, **haproxy: Any) -> ServiceConfig:
    data: dict[str, Any] = {"discovery": {"method": "base"}, "haproxy": {"port": 3300, **haproxy}}
    if zoned:
        data["zone_routing"] = {"zones": ["az1", "az2"]}
    return ServiceConfig.model_validate(data)


def _note(tmp_path: Path, services: dict[str, ServiceConfig], defaults=HTTP) -> str | None:
    return hung_zone_note(managed_config(tmp_path, defaults=defaults), services)


def test_a_zone_routed_http_service_with_a_connect_check_gets_the_note(tmp_path: Path) -> None:
    note = _note(tmp_path, {"web": _service(), "plain": _service(zoned=False)})
    assert note is not None and "web" in note and "plain" not in note
    assert "health_check" in note and "layer7" in note and "evacuate" in note
    # the requests already in the hung zone: retried on the others, not failed (review s38:
    # 223 of 721 failed with the HTTP check and observe layer7 alone, 0 with it)
    assert "response-timeout" in note
    # and what it costs a GET slow by nature (review s38, real HAProxy 2.6: run 4 times,
    # 504 after 4 x `timeout server`): the advice says so, and how to keep clear of it
    assert "retries + 1" in note and "slowest normal GET" in note


def test_no_note_where_a_hung_zone_is_found_or_not_http(tmp_path: Path) -> None:
    services = {
        "checked": _service(health_check={"path": "/ping"}),
        "own": _service(backend=["option httpchk GET /ping"]),
        "off": _service(health_check={"enabled": False}),
        "db": _service(listen=["mode tcp"]),
    }
    assert _note(tmp_path, services) is None
    assert _note(tmp_path, {"web": _service()}, defaults=["mode tcp"]) is None


def test_no_note_outside_managed_mode() -> None:
    from haproxy_helpers import haproxy_config

    assert hung_zone_note(haproxy_config(defaults=HTTP), {"web": _service()}) is None
