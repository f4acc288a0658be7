"""route_sync's pure parts: reading `show map`, keeping entries of running backends, ops."""

from __future__ import annotations

import asyncio
import logging

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


def _done(coroutine):
    """The value of a coroutine that never suspends (no event loop: no socket)."""
    try:
        coroutine.send(None)
    except StopIteration as stop:
        return stop.value
    raise AssertionError("the coroutine suspended")


def test_without_a_runtime_api_a_route_change_asks_for_a_reload(tmp_path):
    from haproxy_helpers import service
    from prometheus_client import CollectorRegistry

    from synapse.haproxy.metrics import HAProxyMetrics
    from synapse.haproxy.route_sync import RouteSync

    sync = RouteSync([], HAProxyMetrics(CollectorRegistry()))
    sync.configure(tmp_path / "haproxy.cfg")
    assert _done(sync.sync(())) == ([], [])  # no routes: nothing to load
    sync.want([service("shop", [], backend_only=True, routes={"hosts": ["shop.test"]})])
    applied, failures = _done(sync.sync(()))
    assert applied == [] and "no runtime API" in failures[0]
    assert "shop.test/ shop" in (tmp_path / "haproxy.routes-exact.map").read_text()
    sync.write_wanted()  # the reload: HAProxy reads the files ...
    sync.invalidate()  # ... and runs
    assert _done(sync.sync(())) == ([], [])


class _Runtime:
    """A runtime client whose HAProxy has no maps (its config has no route lines)."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def execute(self, command: str) -> str:
        self.asked.append(command)
        return "Unknown map identifier. Please use #<id> or <file>.\n"


def test_an_haproxy_without_maps_is_asked_once_per_start_not_per_apply(tmp_path):
    from prometheus_client import CollectorRegistry

    from synapse.haproxy.metrics import HAProxyMetrics
    from synapse.haproxy.route_sync import RouteSync

    runtime = _Runtime()
    sync = RouteSync([runtime], HAProxyMetrics(CollectorRegistry()))  # type: ignore[list-item]
    sync.configure(tmp_path / "haproxy.cfg")
    assert _done(sync.sync(["shop"])) == ([], [])
    asked = len(runtime.asked)
    assert asked >= 1
    for _ in range(3):  # later applies: no `show map` round trip each
        assert _done(sync.sync(["shop"])) == ([], [])
    assert len(runtime.asked) == asked
    sync.invalidate()  # HAProxy started or reloaded: its maps may exist now
    assert _done(sync.sync(["shop"])) == ([], [])
    assert len(runtime.asked) == 2 * asked


class _EmptyMaps:
    """A runtime client whose HAProxy has the route maps, empty, and takes every command."""

    async def execute(self, command: str) -> str:
        return ""

    async def run_ops(self, ops: list) -> list:
        return [None] * len(ops)


def test_a_route_map_file_that_cannot_be_written_fails_no_apply(tmp_path, monkeypatch, caplog):
    """A read-only disk while a route is added at runtime: HAProxy's map has it, the files'
    OSError is said once and counted, not raised (every later apply failed, backing off);
    the next apply writes the files once it can."""
    import errno

    from haproxy_helpers import service
    from prometheus_client import CollectorRegistry

    from synapse.haproxy import routes
    from synapse.haproxy.metrics import HAProxyMetrics
    from synapse.haproxy.route_sync import RouteSync

    caplog.set_level(logging.INFO, logger="synapse.haproxy")
    registry = CollectorRegistry()
    sync = RouteSync([_EmptyMaps()], HAProxyMetrics(registry))  # type: ignore[list-item]
    sync.configure(tmp_path / "haproxy.cfg")
    sync.want([service("shop", [], backend_only=True, routes={"hosts": ["shop.test"]})])
    write_atomic = routes.write_atomic

    def read_only(path, data):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(routes, "write_atomic", read_only)
    applied, failures = asyncio.run(sync.sync(["shop"]))
    assert applied == [f"add map {tmp_path / 'haproxy.routes-exact.map'} shop.test/ shop"]
    assert failures == []
    assert asyncio.run(sync.sync(["shop"])) == ([], [])  # the files owed: tried again
    errors = {"map": "routes"}
    assert registry.get_sample_value("synapse_haproxy_map_file_write_errors_total", errors) == 2
    monkeypatch.setattr(routes, "write_atomic", write_atomic)
    assert asyncio.run(sync.sync(["shop"])) == ([], [])
    assert "shop.test/ shop" in (tmp_path / "haproxy.routes-exact.map").read_text()
    said = [r.getMessage() for r in caplog.records]
    assert said.count("haproxy_map_file_write_failed") == 1, said
    assert said.count("haproxy_map_file_written") == 1, said
