"""issue 11 (pure): leader_election and server_port_override in the selection."""

from __future__ import annotations

from synapse_testlib import service_config

from smartstack.record import Registration
from synapse.model import Found
from synapse.selection import ORIGIN_DEFAULT, select_servers

ZK = {"method": "zookeeper", "hosts": ["127.0.0.1:2181"], "path": "/nerve/web"}


def found(host: str, port: int, name: str, sequence: int | None) -> Found:
    reg = Registration(host=host, port=port, name=name)
    return Found(reg, f"zookeeper:/nerve/web/{name}_{sequence}", sequence)


def test_leader_election_keeps_only_the_lowest_sequence_after_label_filters() -> None:
    cfg = service_config(ZK, leader_election=True)
    items = [found("10.0.0.2", 80, "b", 7), found("10.0.0.1", 80, "a", 12)]
    chosen = select_servers(cfg, items, None)
    assert [s.name for s in chosen.servers] == ["b_10.0.0.2:80"]
    assert chosen.records[0]["id"] == 7 and not chosen.leader_failed
    # without the key both get traffic
    assert len(select_servers(service_config(ZK), items, None)) == 2


def test_leader_election_fails_without_sequence_and_falls_back_to_defaults() -> None:
    cfg = service_config(
        ZK, leader_election=True, default_servers=[{"name": "d", "host": "10.9.9.9", "port": 1}]
    )
    chosen = select_servers(cfg, [found("10.0.0.1", 80, "a", None)], None)
    assert chosen.origin == ORIGIN_DEFAULT and chosen.leader_failed
    assert [s.host for s in chosen.servers] == ["10.9.9.9"]


def test_server_port_override_names_cookies_and_records_carry_the_port() -> None:
    cfg = service_config(ZK, haproxy={"server_port_override": 50001})
    chosen = select_servers(cfg, [found("216.58.212.110", 80, "google", 1)], None)
    (server,) = chosen.servers
    assert server.name == "google_216.58.212.110:50001" and server.port == 50001
    assert chosen.records[0]["port"] == 50001


def test_backend_port_override_wins_and_base_defaults_keep_their_port() -> None:
    both = service_config(ZK, backend_port_override=7000, haproxy={"server_port_override": 50001})
    assert select_servers(both, [found("10.0.0.1", 80, "a", 1)], None).servers[0].port == 7000
    base = service_config(
        {"method": "base"},
        default_servers=[{"name": "d", "host": "10.0.0.9", "port": 8080}],
        haproxy={"server_port_override": 50001},
    )
    (server,) = select_servers(base, [], None).servers
    assert (server.name, server.port) == ("d_10.0.0.9:8080", 8080)
