"""Registry addresses in nerve and synapse configs are checked at load (review s21).

'127.0.0.1:2181,', '127.0.0.1: 2181', 'localhost:2l81' passed -k and SIGHUP; kazoo then
raised 'bad hostname': nerve withdrew a healthy instance, synapse's watcher crash-looped
with its service frozen. etcd's split_endpoint made host 'a:2379,b' of 'a:2379,b:2379'.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from kazoo.hosts import collect_hosts

from nerve.config import load_nerve_config
from smartstack.configfile import ConfigError
from smartstack.etcd_events import split_endpoint
from smartstack.zookeeper import connection_string
from synapse.config import load_synapse_config


def nerve_file(tmp_path: Path, **service: Any) -> Path:
    block = {"host": "10.0.0.1", "port": 80, "zk_path": "/s", **service}
    path = tmp_path / "nerve.json"
    path.write_text(json.dumps({"instance_id": "a", "services": {"web": block}}))
    return path


def synapse_file(tmp_path: Path, discovery: dict[str, Any]) -> Path:
    doc = {"services": {"web": {"discovery": discovery, "haproxy": {"port": 3000}}}}
    path = tmp_path / "synapse.json"
    path.write_text(json.dumps(doc))
    return path


def zk(hosts: object) -> dict[str, Any]:
    return {"method": "zookeeper", "hosts": hosts, "path": "/nerve/web"}


def etcd(**keys: object) -> dict[str, Any]:
    return {"method": "etcd", "path": "/nerve/web", **keys}


def refusal(load: Any, path: Path) -> list[str]:
    with pytest.raises(ConfigError) as refused:
        load(path)
    return refused.value.lines


@pytest.mark.parametrize(
    ("entry", "why"),
    [
        ("127.0.0.1:2181,", "an empty host: a ',' too many"),
        ("zk1:2181,,zk2:2181", "an empty host: a ',' too many"),
        ("zk1:2181,zk2:2l81", "port '2l81'"),
        ("127.0.0.1: 2181", "port ' 2181'"),
        ("localhost:2l81", "port '2l81'"),
        ("127.0.0.1:2181 ", "port '2181 '"),
        ("zk1:0", "port 0 is outside 1-65535"),
        ("zk 1:2181", "host 'zk 1' is neither an IP address nor a DNS name"),
        ("fe80::1:2181", "an IPv6 address goes in brackets: '[::1]:port'"),
        ("/smartstack", "a chroot goes after the last host: 'zk3:2181/chroot'"),
    ],
)
def test_a_zookeeper_host_kazoo_cannot_read_is_refused_by_both(
    tmp_path: Path, entry: str, why: str
) -> None:
    nerve = nerve_file(tmp_path, zk_hosts=["zk0:2181", entry])
    assert refusal(load_nerve_config, nerve) == [
        f"{nerve}: services.web: zk_hosts[1]: {entry!r} is not host:port ({why})"
    ]
    synapse = synapse_file(tmp_path, zk(["zk0:2181", entry]))
    assert refusal(load_synapse_config, synapse) == [
        f"{synapse}: services.web.discovery: hosts[1]: {entry!r} is not host:port ({why})"
    ]


@pytest.mark.parametrize(
    "hosts",
    [
        ["127.0.0.1:2181"],
        ["zk1.example.com:2181", "zk2.example.com:2181"],
        ["zk1"],  # kazoo's default port, 2181
        ["[::1]:2181", "10.0.0.2:2181"],
        ["zk1:2181", "zk2:2181", "zk3:2181/smartstack/prod"],
        "zk1:2181, zk2:2181,",  # Airbnb's one string: split at the commas
    ],
)
def test_what_kazoo_reads_is_accepted_as_it_reads_it(tmp_path: Path, hosts: object) -> None:
    config, _ = load_nerve_config(nerve_file(tmp_path, zk_hosts=hosts))
    given = config.services["web"].zk_hosts
    assert given is not None
    addresses, _ = collect_hosts(connection_string(given))  # as the daemons hand it over
    assert len(addresses) == len(given)
    load_synapse_config(synapse_file(tmp_path, zk(hosts)))


def test_an_entry_holding_a_connection_string_is_accepted(tmp_path: Path) -> None:
    """['zk1:2181,zk2:2181']: kazoo reads it, and Ruby's synapse joins its hosts with ','
    (configs and tests that hand over an ensemble's connection string as one entry)."""
    hosts = ["zk1:2181,zk2:2181", "zk3:2181/smartstack"]
    config, _ = load_nerve_config(nerve_file(tmp_path, zk_hosts=hosts))
    given = config.services["web"].zk_hosts
    assert given is not None
    addresses, chroot = collect_hosts(connection_string(given))
    assert [port for _, port in addresses] == [2181, 2181, 2181] and chroot == "/smartstack"
    load_synapse_config(synapse_file(tmp_path, zk(hosts)))


def test_a_chroot_kazoo_would_read_wrongly_is_refused(tmp_path: Path) -> None:
    # The hosts are joined sorted: 'zk1:2181/ch,zk2:2181' is chroot '/ch,zk2:2181' to kazoo.
    path = nerve_file(tmp_path, zk_hosts=["zk2:2181", "zk1:2181/ch"])
    assert refusal(load_nerve_config, path) == [
        f"{path}: services.web: zk_hosts[1]: 'zk1:2181/ch': the chroot must be on the host "
        "that sorts last, 'zk2:2181' (the hosts are joined in sorted order)"
    ]


@pytest.mark.parametrize(
    ("endpoint", "why"),
    [
        ("127.0.0.1:2379,127.0.0.2:2379", "a ',' in it: one host:port per list entry"),
        ("127.0.0.1:2379 ", "port '2379 '"),
        ("http//127.0.0.1:2379", "a scheme is written 'http://' or 'https://'"),
        ("grpc://127.0.0.1:2379", "scheme 'grpc' (http:// or https://)"),
        ("http://127.0.0.1:2379/v3", "a path ('/v3') after the address"),
    ],
)
def test_an_etcd_endpoint_that_is_not_an_address_is_refused_by_both(
    tmp_path: Path, endpoint: str, why: str
) -> None:
    expected = f"{endpoint!r} is not host:port or http(s)://host:port ({why})"
    nerve = nerve_file(tmp_path, reporter_type="etcd", etcd_endpoints=[endpoint])
    assert refusal(load_nerve_config, nerve) == [
        f"{nerve}: services.web: etcd_endpoints[0]: {expected}"
    ]
    synapse = synapse_file(tmp_path, etcd(endpoints=[endpoint]))
    assert refusal(load_synapse_config, synapse) == [
        f"{synapse}: services.web.discovery: endpoints[0]: {expected}"
    ]
    with pytest.raises(ValueError):
        split_endpoint(endpoint)


def test_an_etcd_host_key_with_a_port_in_it_is_refused(tmp_path: Path) -> None:
    synapse = synapse_file(tmp_path, etcd(host="127.0.0.1:2379", port=2379))
    assert refusal(load_synapse_config, synapse) == [
        f"{synapse}: services.web.discovery: host: host '127.0.0.1:2379' is neither an IP "
        "address nor a DNS name (the port goes in its own key)"
    ]


def test_airbnb_s_etcd_host_and_port_keys_still_load_and_an_ipv6_host_gets_brackets(
    tmp_path: Path,
) -> None:
    config, _ = load_nerve_config(nerve_file(tmp_path, reporter_type="etcd", etcd_host="::1"))
    endpoints = config.services["web"].etcd_endpoint_list()
    assert endpoints == ["[::1]:4003"]
    assert split_endpoint(endpoints[0]) == ("::1", 4003)
    synapse, _ = load_synapse_config(synapse_file(tmp_path, etcd(host="etcd1", port=2379)))
    assert synapse.services["web"].discovery.etcd_endpoint_list() == ["etcd1:2379"]
