"""Incremental rendering and planning (pure): pieces are reused while their inputs stay,
and a config patched piece by piece is exactly the config a fresh render gives."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from haproxy_helpers import haproxy_config, running_from, server, service
from hypothesis import given, settings
from hypothesis import strategies as st

from synapse.haproxy.configtext import assemble, parse_blocks, parse_config, section_changes
from synapse.haproxy.desired import DesiredConfig
from synapse.haproxy.planner import plan
from synapse.haproxy.render import Renderer
from synapse.haproxy.running import Capabilities, RunningServer
from synapse.haproxy.view import RunningIds
from synapse.model import DesiredService

V26 = Capabilities(version=(2, 6, 12))
CONFIG = haproxy_config(shared_frontend=["bind 127.0.0.1:80"])


def srv(backend: str, name: str, sid: int) -> RunningServer:
    return RunningServer(backend, name, sid, "10.0.0.1", 8080)


def fleet(count: int, servers: int = 3) -> list[DesiredService]:
    return [
        service(f"s{i}", [server(f"10.0.{i}.{j}", 8080) for j in range(1, servers + 1)], port=None)
        for i in range(count)
    ]


def fresh(services: list[DesiredService], ids: dict | None = None) -> DesiredConfig:
    return Renderer(CONFIG).render(services, ids)


def same_config(got: DesiredConfig, want: DesiredConfig) -> None:
    assert got.text == want.text
    assert got.parsed == want.parsed == parse_config(got.text)
    assert got.parsed.proxies == want.parsed.proxies
    assert got.backends == want.backends
    assert got.warnings == want.warnings


def test_unchanged_services_come_from_the_cache():
    renderer = Renderer(CONFIG)
    services = fleet(5)
    first = renderer.render(services, {}, set())
    assert renderer.rendered_pieces == 5 and first.delta is None  # nothing to patch yet
    again = renderer.render(list(services), {}, set())
    assert renderer.rendered_pieces == 5
    assert again.delta is not None and again.delta.base is first.parsed
    assert not (again.delta.headers or again.delta.proxies or again.delta.backends)
    assert again.parsed.sections["backend s3"] is first.parsed.sections["backend s3"]
    assert again.backends["s3"] is first.backends["s3"]


def test_a_changed_service_is_rendered_alone_and_the_result_is_a_fresh_render():
    renderer = Renderer(CONFIG)
    services = fleet(5)
    first = renderer.render(services, {}, set())
    services[2] = service("s2", [server("10.0.2.1", 8080), server("10.9.9.9", 8080)], port=None)
    patched = renderer.render(services, {}, set())
    assert renderer.rendered_pieces == 6
    same_config(patched, fresh(services))
    assert patched.delta is not None and patched.delta.base is first.parsed
    assert patched.delta.backends == {"s2"} and patched.delta.proxies == {"s2"}
    assert patched.delta.headers == frozenset()  # only server lines changed
    # The other pieces are the very same objects: comparing them costs nothing.
    assert patched.parsed.servers["s4"] is first.parsed.servers["s4"]


def test_changed_running_ids_render_a_piece_again_unless_they_are_its_own():
    renderer = Renderer(CONFIG)
    services = fleet(3)
    first = renderer.render(services, {}, set())
    own = dict(first.backends["s1"].servers.items())
    ids = {"s1": {name: spec.id for name, spec in own.items()}}
    # HAProxy runs exactly the ids the piece gave (after a start): no new rendering.
    renderer.render(services, ids, {"s1"})
    assert renderer.rendered_pieces == 3
    # A server that left but is still in HAProxy holds an id: the piece is rendered again.
    moved = {"s1": {**ids["s1"], "gone_10.0.1.9:8080": 7}}
    again = renderer.render(services, moved, {"s1"})
    assert renderer.rendered_pieces == 4
    same_config(again, fresh(services, moved))
    # Another id for one of its servers, or one of them missing: rendered again too.
    first_name = next(iter(own))
    other = {"s1": {**ids["s1"], first_name: own[first_name].id % 1000 + 1}}
    missing = {"s1": {n: i for n, i in ids["s1"].items() if n != first_name}}
    for count, running in enumerate((other, missing), start=5):
        renderer.render(services, running, {"s1"})
        assert renderer.rendered_pieces == count
    # Rendered against HAProxy's running servers: the piece keeps their ids, not the map.
    running = {name: srv("s1", name, spec.id) for name, spec in own.items()}
    view_ids = RunningIds().use({"s1": {**running, "gone": srv("s1", "gone", 7)}})
    renderer.render(services, view_ids, {"s1"})
    kept = renderer._pieces["s1"].ids
    assert type(kept) is dict and kept == {**ids["s1"], "gone": 7}
    # The default layout never renders whole: its pieces keep no template context.
    assert all(piece.context == {} for piece in renderer._pieces.values())


def test_a_changed_list_of_services_renders_the_whole_list():
    renderer = Renderer(CONFIG)
    services = fleet(4)
    renderer.render(services, {}, set())
    for changed in (
        [*services, service("new", [server("10.1.0.1", 80)], port=None)],  # added
        services[1:],  # removed
        [services[0], dataclasses.replace(services[1], config=services[1].config.model_copy(
            update={"haproxy": services[1].config.haproxy.model_copy(update={"disabled": True})}
        )), *services[2:]],  # disabled
    ):  # fmt: skip
        result = renderer.render(changed, {}, set())
        assert result.delta is None
        same_config(result, fresh(changed))


def test_shared_frontend_lines_or_new_sections_patch_nothing():
    renderer = Renderer(CONFIG)
    services = fleet(3)
    renderer.render(services, {}, set())
    services[1] = service("s1", services[1].servers, port=None, shared_frontend=["acl x path /"])
    result = renderer.render(services, {}, set())
    assert result.delta is None  # the tail changes: whole render
    assert "acl x path /" in result.text
    services[1] = service("s1", services[1].servers, port=3001)  # a frontend appears
    result = renderer.render(services, {}, set())
    assert result.delta is None
    same_config(result, fresh(services))


def test_template_without_blocks_is_rendered_whole_and_right(tmp_path: Path):
    template = tmp_path / "t.j2"
    template.write_text(
        "global\n    maxconn 10\n{% for s in services %}\nbackend {{ s.backend_name }}\n"
        "{% for server in s.servers %}    {{ server.line }}\n{% endfor %}{% endfor %}\n"
    )
    config = haproxy_config(template=str(template))
    renderer = Renderer(config)
    assert not renderer.composable
    services = fleet(3)
    renderer.render(services, {}, set())
    services[0] = service("s0", [server("10.3.3.3", 80)], port=None)
    result = renderer.render(services, {}, set())
    assert result.delta is None
    assert result.text == Renderer(config).render(services).text
    assert "server i_10.3.3.3:80 10.3.3.3:80" in result.text


def test_parse_in_blocks_is_parse_of_the_whole():
    pieces = [
        "# head\nglobal\n  maxconn 1\ndefaults\n  mode http\n",
        "\nbackend web\n  balance roundrobin\n  server a 1.1.1.1:80 check\n",
        "\nbackend web\n  server b 2.2.2.2:80\ndefaults\n  mode tcp\n",
        "\nlisten stats\n  bind :9000\n",
    ]
    joined = assemble(block for piece in pieces for block in parse_blocks(piece))
    assert joined == parse_config("".join(pieces))
    assert set(joined.servers["web"]) == {"a", "b"}  # two sections of one proxy: merged
    assert "defaults #2" in joined.sections


# --------------------------------------------------------------------------- properties

EDITS = st.lists(
    st.tuples(
        st.integers(0, 5),  # service
        st.sets(st.integers(1, 6), max_size=6),  # its servers now
        st.sampled_from(["servers", "weight", "ids", "frontend"]),
    ),
    min_size=1,
    max_size=8,
)


@given(edits=EDITS)
@settings(max_examples=25, deadline=None)
def test_patched_renders_and_plans_equal_fresh_ones(edits):
    """Any sequence of changes: the incremental config is byte for byte a fresh render,
    and planning only what its delta names finds what a full comparison finds."""
    renderer = Renderer(CONFIG)
    services = fleet(6, servers=2)
    ids: dict[str, dict[str, int]] = {}
    previous = renderer.render(services, ids, set())
    for index, hosts, kind in edits:
        name = f"s{index}"
        changed_ids: set[str] = set()
        servers = [server(f"10.0.{index}.{h}", 8080) for h in sorted(hosts)]
        if kind == "weight":
            servers = [dataclasses.replace(s, weight=len(hosts)) for s in servers]
        if kind == "ids":
            ids[name] = {s.name: 100 + n for n, s in enumerate(servers)}
            changed_ids.add(name)
        port = 4000 + index if kind == "frontend" else None
        services[index] = service(name, servers, port=port)
        result = renderer.render(services, ids, changed_ids)
        same_config(result, fresh(services, ids))
        running = running_from(previous)
        full = plan(dataclasses.replace(result, delta=None), running, V26)
        delta = result.delta
        if delta is not None:
            assert delta.base is previous.parsed
            assert set(section_changes(previous.parsed, result.parsed)) <= {
                f"'{h}' changed" for h in delta.headers
            }
            quick = plan(result, dataclasses.replace(running, config=previous.parsed), V26,
                         only=delta.backends)  # fmt: skip
            assert quick.ops == full.ops
            assert (quick.reload is None) == (full.reload is None)
        previous = result


def test_a_change_of_servers_renders_only_the_servers_again():
    """The lines a service's config decides are worked out once per config object; the
    result is what a fresh renderer gives."""
    renderer = Renderer(CONFIG)
    before = service("web", [server("10.0.0.1", 8080)], listen=["mode http", "option httplog"])
    renderer.render([before], {}, set())
    after = DesiredService("web", before.config, [server("10.0.0.1", 8080), server("10.0.0.2", 80)])
    assert renderer._config_parts(after) is renderer._config_parts(before)
    same_config(renderer.render([after], {}, {"web"}), fresh([after]))
    changed = service("web", after.servers, listen=["mode tcp"])  # another config object
    assert renderer._config_parts(changed) is not renderer._config_parts(after)
    same_config(renderer.render([changed], {}, {"web"}), fresh([changed]))
    assert "mode tcp" in renderer.render([changed], {}, {"web"}).text


def test_changed_backends_names_what_the_next_render_may_change():
    """What an apply reads before rendering when backends are unread since a reload."""
    renderer = Renderer(CONFIG)
    services = fleet(3)
    assert renderer.changed_backends(services) is None  # nothing rendered yet
    renderer.render(services)
    assert renderer.changed_backends(services) == set()
    changed = [services[0], service("s1", [server("10.9.9.9", 8080)], port=None), services[2]]
    assert renderer.changed_backends(changed) == {"s1"}
    assert renderer.changed_backends(services[:2]) is None  # a service less: any may change
