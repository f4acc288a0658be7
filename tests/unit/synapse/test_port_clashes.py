"""Two HAProxy sections binding one port on overlapping addresses: a config error.

HAProxy binds both without a word (SO_REUSEPORT) and the kernel splits the connections:
web's `port` moved onto api's sent 164 of 369 api requests to web's backends, a service on
the stats page's port failed 362 of 373 of its requests (synapse/port_clash.py).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from smartstack.config_errors import ConfigError
from synapse.config import SynapseConfig, load_synapse_config
from synapse.port_clash import bind_clashes, bind_shadows


def service(port: int | None = None, **haproxy: Any) -> dict[str, Any]:
    """A service; without ``port`` a backend only (``null_port``: ``port: null``)."""
    block = {} if port is None else {"port": port}
    if haproxy.pop("null_port", False):
        block["port"] = None
    return {"discovery": {"method": "base"}, "haproxy": block | haproxy}


def document(services: dict[str, Any], **haproxy: Any) -> dict[str, Any]:
    top = {"config_file_path": "/tmp/x.cfg", "reload_command": "true"} | haproxy
    return {"services": services, "haproxy": top, "admin": {"port": None}}


def clashes(services: dict[str, Any], **haproxy: Any) -> list[str]:
    return bind_clashes(SynapseConfig.model_validate(document(services, **haproxy)))


def shadows(services: dict[str, Any], **haproxy: Any) -> list[str]:
    return bind_shadows(SynapseConfig.model_validate(document(services, **haproxy)))


def test_two_services_on_one_port_are_a_clash_naming_both() -> None:
    [line] = clashes({"web": service(45493), "api": service(45493)}, bind_address="127.0.0.1")
    assert line.startswith(
        "services.api.haproxy.port: port 45493 on 127.0.0.1 is also bound by "
        "services.web.haproxy.port:"
    ), line
    assert "SO_REUSEPORT" in line


@pytest.mark.parametrize(
    ("web", "api"),
    [
        ("localhost", "127.0.0.1"),  # synapse's default address is 127.0.0.1 (or ::1)
        ("localhost", "::1"),
        ("10.0.0.5", "10.0.0.5"),
        ("0.0.0.0", "*"),  # two wildcards split every address's connections
        ("::", "0.0.0.0"),  # (`::` is dual-stack unless v6only: kept simple)
    ],
)
def test_overlapping_addresses_clash(web: str, api: str) -> None:
    services = {"web": service(3000, bind_address=web), "api": service(3000, bind_address=api)}
    [line] = clashes(services)
    assert "port 3000" in line and "services.web.haproxy.port" in line
    assert "split the connections" in line and shadows(services) == []


@pytest.mark.parametrize(
    ("web", "api"), [("0.0.0.0", "127.0.0.1"), ("::", "10.0.0.5"), ("*", "127.0.0.1")]
)
def test_a_wildcard_beside_an_address_is_a_warning(web: str, api: str) -> None:
    """The kernel gives the address's connections to the specific bind, the rest to the
    wildcard (measured): nothing is split at random, and it can be meant."""
    services = {"web": service(3000, bind_address=web), "api": service(3000, bind_address=api)}
    assert clashes(services) == []
    [line] = shadows(services)
    assert f"connections to {api} would reach" in line


@pytest.mark.parametrize(
    "services",
    [
        # different addresses on one port: what bind_address is for
        {
            "web": service(3000, bind_address="127.0.0.1"),
            "api": service(3000, bind_address="127.0.0.2"),
        },
        {"web": service(3000, bind_address="10.0.0.1"), "api": service(3000, bind_address="::1")},
        # no frontend: a backend only (no `port`), `port: null`, a disabled service
        {"web": service(3000), "api": service(), "db": service(null_port=True)},
        {"web": service(3000), "api": service(3000, disabled=True)},
        {"web": service(3000), "api": service(3001)},
    ],
)
def test_binds_that_cannot_meet_are_accepted(services: dict[str, Any]) -> None:
    assert clashes(services) == []


def test_a_service_on_the_stats_page_port_is_a_clash() -> None:
    services = {"web": service(8404, bind_address="127.0.0.1"), "api": service(3000)}
    [line] = clashes(services, managed={"stats": {}})
    assert line.startswith(
        "services.web.haproxy.port: port 8404 on 127.0.0.1 is also bound by "
        "haproxy.managed.stats.bind:"
    ), line
    assert clashes(services, managed={"stats": {"enabled": False}}) == []
    assert clashes(services, managed={"stats": {"bind": "127.0.0.1:8405"}}) == []
    assert clashes(services, managed={"stats": {"bind": "10.0.0.5:8404"}}) == []
    assert clashes(services, managed={"stats": {"bind": "0.0.0.0:8404"}}) == []
    [line] = shadows(services, managed={"stats": {"bind": "0.0.0.0:8404"}})
    assert "also bound by haproxy.managed.stats.bind (0.0.0.0:8404)" in line


def test_extra_sections_titles_binds_and_port_ranges_clash() -> None:
    web = {"web": service(3212)}
    [line] = shadows(web, extra_sections={"listen stats :3212": ["mode http"]})
    assert "services.web.haproxy.port: port 3212 on localhost" in line
    assert "haproxy.extra_sections['listen stats :3212'] (:3212)" in line
    ranged = {"frontend many": ["bind 127.0.0.1:8000-8010"]}
    [line] = clashes({"web": service(8005)}, extra_sections=ranged)
    assert "port 8005" in line and "extra_sections['frontend many']" in line
    assert clashes({"web": service(8011)}, extra_sections=ranged) == []
    # sockets that are no TCP port, and sections without binds
    other = {"listen a": ["bind unix@/run/a.sock", "bind abns@x"], "peers p": ["peer p 10.0.0.1:9"]}
    assert clashes({"web": service(3000)}, extra_sections=other) == []
    [line] = clashes({}, extra_sections={"listen a": ["bind :80"], "listen b": ["bind :80"]})
    assert "extra_sections['listen b']: port 80 on *" in line


def test_the_shared_frontend_is_one_section_whoever_writes_its_lines() -> None:
    edge = {
        "web": service(shared_frontend=["bind :80", "use_backend web if { hdr(host) web }"]),
        "api": service(shared_frontend=["bind :80", "use_backend api if { hdr(host) api }"]),
    }
    assert clashes(edge, shared_frontend=["bind :80", "mode http"]) == []
    edge["admin"] = service(80, bind_address="127.0.0.1")  # its own frontend on that port
    assert clashes(edge, shared_frontend=["bind :80", "mode http"]) == []  # specific wins
    lines = shadows(edge, shared_frontend=["bind :80", "mode http"])
    assert len(lines) == 3 and all("services.admin.haproxy.port: port 80" in x for x in lines)


def test_the_tls_bind_is_part_of_the_shared_frontend() -> None:
    tls = {"shared_frontend": ["bind :80", "mode http"], "tls": {"cert_dir": "/etc/certs"}}
    assert clashes({"web": service(3000)}, **tls) == []
    [line] = clashes({"web": service(443)}, **tls)
    assert "port 443" in line and "haproxy.tls.port (localhost:443)" not in line
    assert "also bound by haproxy.tls.port" in line


def test_a_services_own_binds_never_clash() -> None:
    # a frontend on every address and its zone signal addresses, on its port; its own
    # bind lines on that port: one section
    web = service(3000, bind_address="0.0.0.0", frontend=["bind 127.0.0.2:3000"])
    web["zone_routing"] = {"zones": ["az1", "az2"], "zone_of_address": {"127.0.0.2": "az2"}}
    assert clashes({"web": web}, zone="az1") == []


def test_a_thousand_services_are_checked_in_a_blink() -> None:
    services = {f"s{i}": service(10000 + i, bind_address="127.0.0.1") for i in range(1000)}
    config = SynapseConfig.model_validate(document(services))
    started = time.perf_counter()
    assert bind_clashes(config) == []
    assert time.perf_counter() - started < 0.5  # (sorted by port: no pairs compared)
    services["s999"]["haproxy"]["port"] = 10000
    [line] = bind_clashes(SynapseConfig.model_validate(document(services)))
    assert line.startswith("services.s999.haproxy.port: port 10000 on 127.0.0.1 is also")


def test_every_load_refuses_a_clash_so_check_start_and_sighup_do(tmp_path: Path) -> None:
    path = tmp_path / "synapse.json"
    doc = document({"web": service(3000), "api": service(3001)})
    path.write_text(json.dumps(doc))
    load_synapse_config(path)
    doc["services"]["web"]["haproxy"]["port"] = 3001
    path.write_text(json.dumps(doc))
    with pytest.raises(ConfigError) as caught:
        load_synapse_config(path)
    [line] = caught.value.lines
    assert line.startswith(f"{path}: services.api.haproxy.port: port 3001 on localhost"), line


def test_a_shadowing_bind_loads_with_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "synapse.json"
    doc = document({"web": service(3000, bind_address="0.0.0.0"), "api": service(3000)})
    path.write_text(json.dumps(doc))
    _, warnings = load_synapse_config(path)
    assert any(w.startswith(f"{path}: services.api.haproxy.port: port 3000") for w in warnings)
