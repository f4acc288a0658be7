"""route_sync's pure parts: reading `show map`, keeping entries of running backends, ops."""

from __future__ import annotations

from synapse.haproxy.route_sync import MapOp, parse_show_map, restrict
from synapse.haproxy.routes import RouteMaps


def test_show_map_answers_parse_to_entries_or_none_for_an_unknown_map():
    answer = "0x55d0c7a8b0a0 shop.test/ shop\n0x55d0c7a8b0f0 www.shop.test/api/ api\n\n"
    assert parse_show_map(answer) == {"shop.test/": "shop", "www.shop.test/api/": "api"}
    assert parse_show_map("") == {}
    assert parse_show_map("Unknown map identifier. Please use #<id> or <file>.\n") is None


def test_only_entries_of_running_backends_are_kept():
    maps = RouteMaps(exact={"a.test/": "a", "n.test/": "new"}, paths={"/s/": "a"})
    assert restrict(maps, {"a"}) == RouteMaps(exact={"a.test/": "a"}, paths={"/s/": "a"})


def test_map_ops_carry_their_command_and_a_label_per_verb():
    op = MapOp("/x/h.routes-exact.map", "a.test/", "add map /x/h.routes-exact.map a.test/ a")
    assert op.command == "add map /x/h.routes-exact.map a.test/ a"
    assert op.label == "map_add" and op.succeeded("") and not op.succeeded("Unknown map")
