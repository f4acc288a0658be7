"""Whether the config file on disk may serve in place of a candidate a full disk keeps out
(``synapse.haproxy.file_match``): only when every port it binds answers as the candidate
would, and its route maps route as the candidate's."""

from __future__ import annotations

from pathlib import Path

from synapse.haproxy.configtext import parse_config
from synapse.haproxy.file_match import differences, unlike
from synapse.haproxy.routes import RouteMaps, map_paths, map_text


def config(*services: tuple[str, int], extra: str = "") -> str:
    text = "global\n    maxconn 100\ndefaults\n    mode http\n"
    for name, port in services:
        text += f"frontend {name}\n    bind 127.0.0.1:{port}\n    default_backend {name}\n"
        text += f"backend {name}\n    server a 10.0.0.1:{port + 1000}\n"
    return text + extra


FILE = parse_config(config(("payments", 4001), ("admin", 4002)))


def test_ports_swapped_or_a_service_removed_keep_the_file_out():
    swapped = parse_config(config(("payments", 4002), ("admin", 4001)))
    assert unlike(FILE, swapped) == ["frontend payments", "frontend admin"]
    assert unlike(FILE, parse_config(config(("payments", 4001)))) == ["frontend admin"]


def test_added_services_and_other_servers_let_it_serve():
    added = parse_config(config(("payments", 4001), ("admin", 4002), ("api", 4003)))
    assert unlike(FILE, added) == []
    servers = config(("payments", 4001), ("admin", 4002)).replace("10.0.0.1", "10.0.0.9")
    assert unlike(FILE, parse_config(servers)) == []


def test_route_maps_the_file_reads_must_route_as_the_candidates(tmp_path: Path):
    path = tmp_path / "haproxy.cfg"
    maps = map_paths(path)
    shared = f"frontend edge\n    bind :80\n    use_backend %[path,map_beg({maps['exact']})]\n"
    path.write_text(config(("payments", 4001), extra=shared))
    candidate = parse_config(path.read_text())
    for kind, map_path in maps.items():
        map_path.write_text(map_text({"a.example.com/": "payments"} if kind == "exact" else {}))
    same = RouteMaps(exact={"a.example.com/": "payments"})
    assert differences(path, candidate, maps, same) == []
    moved = RouteMaps(exact={"a.example.com/": "admin"})
    assert differences(path, candidate, maps, moved) == ["route map exact"]
    added = RouteMaps(exact={"a.example.com/": "payments", "a.example.com/api": "admin"})
    assert differences(path, candidate, maps, added) == ["route map exact"]  # (map_beg)


def test_maps_the_file_does_not_read_do_not_count_and_no_file_is_none(tmp_path: Path):
    path = tmp_path / "haproxy.cfg"
    path.write_text(config(("payments", 4001)))
    candidate = parse_config(path.read_text())
    wanted = RouteMaps(exact={"a.example.com/": "payments"})
    assert differences(path, candidate, map_paths(path), wanted) == []
    assert differences(tmp_path / "none.cfg", candidate, None, wanted) is None
