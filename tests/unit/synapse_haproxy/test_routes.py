"""Routes as data (pure): validation, compiling to maps, collisions, runtime diffs, `-k`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from haproxy_helpers import haproxy_config, render, server, service

from synapse.cli import main as synapse_main
from synapse.edge_config import ServiceRoutes
from synapse.haproxy import routes
from synapse.haproxy.render import Renderer
from synapse.haproxy.routes import (
    RouteCollision,
    RouteMaps,
    RouteSpec,
    compile_routes,
    map_paths,
    runtime_commands,
)

PATHS = map_paths(Path("/run/edge/haproxy.cfg"))


@pytest.mark.parametrize(
    "host", ["shop.example.com", "*.shop.example.com", "localhost", "a-1.b2.io", "*.io"]
)
def test_valid_hosts(host):
    assert ServiceRoutes(hosts=[host]).hosts == [host]


@pytest.mark.parametrize(
    ("host", "why"),
    [
        ("Shop.example.com", "must be lowercase (write 'shop.example.com')"),
        ("shop.example.com:443", "is not a DNS name"),
        ("https://shop.example.com", "is not a DNS name"),
        ("*shop.example.com", "is not a DNS name"),
        ("a.*.example.com", "is not a DNS name"),
        ("-a.example.com", "is not a DNS name"),
        ("a..example.com", "is not a DNS name"),
        ("", "is not a DNS name"),
    ],
)
def test_invalid_hosts_are_refused_with_the_reason(host, why):
    with pytest.raises(ValueError, match=why.replace("(", r"\(").replace(")", r"\)")):
        ServiceRoutes(hosts=[host])


@pytest.mark.parametrize("path", ["/", "/api", "/api/v2/", "/a-b_c.d~e/%20"])
def test_valid_paths(path):
    assert ServiceRoutes(paths=[path]).paths == [path]


@pytest.mark.parametrize("path", ["api", "/a b", "/a#b", "/a?b", "/a\\b", ""])
def test_invalid_paths_are_refused(path):
    with pytest.raises(ValueError, match="must start with '/'"):
        ServiceRoutes(paths=[path])


def test_compile_puts_each_kind_of_route_in_its_map():
    maps = compile_routes(
        {
            "shop": RouteSpec("shop_be", ["shop.example.com"], []),
            "api": RouteSpec("api", ["shop.example.com"], ["/api", "/v2/api"]),
            "tenants": RouteSpec("tenants", ["*.shop.example.com"], []),
            "static": RouteSpec("static", [], ["/static/"]),
        }
    )
    assert maps.exact == {
        "shop.example.com/": "shop_be",
        "shop.example.com/api": "api",
        "shop.example.com/v2/api": "api",
    }
    assert maps.wildcard == {".shop.example.com/": "tenants"}
    assert maps.paths == {"/static/": "static"}


def test_same_host_and_path_on_two_services_names_both():
    with pytest.raises(RouteCollision, match=r"host a\.com path /x .*'one' and 'two'"):
        compile_routes(
            {"one": RouteSpec("one", ["a.com"], ["/x"]), "two": RouteSpec("two", ["a.com"], ["/x"])}
        )
    # hosts only is path "/": it collides with an explicit "/"
    with pytest.raises(RouteCollision, match=r"host \*\.a\.com path / .*'one' and 'two'"):
        compile_routes(
            {"one": RouteSpec("one", ["*.a.com"], []), "two": RouteSpec("two", ["*.a.com"], ["/"])}
        )
    with pytest.raises(RouteCollision, match=r"path /s \(any host\) .*'one' and 'two'"):
        compile_routes({"one": RouteSpec("one", [], ["/s"]), "two": RouteSpec("two", [], ["/s"])})


def test_a_wildcard_and_an_exact_host_do_not_collide():
    maps = compile_routes(
        {"one": RouteSpec("one", ["a.com"], []), "two": RouteSpec("two", ["*.a.com"], [])}
    )
    assert maps.exact == {"a.com/": "one"} and maps.wildcard == {".a.com/": "two"}


def test_map_files_are_beside_the_config_and_sorted(tmp_path):
    paths = map_paths(tmp_path / "haproxy.cfg")
    assert paths["exact"] == tmp_path / "haproxy.routes-exact.map"
    maps = RouteMaps(exact={"b.com/": "b", "a.com/": "a"})
    assert routes.write_map_files(maps, paths) == list(paths.values())
    lines = paths["exact"].read_text().splitlines()
    assert lines[1:] == ["a.com/ a", "b.com/ b"] and lines[0].startswith("#")
    assert paths["paths"].read_text().splitlines()[1:] == []
    # unchanged maps are not rewritten
    assert routes.write_map_files(maps, paths) == []
    # with what was written last, only the kinds whose entries changed are looked at
    more = RouteMaps(exact={"a.com/": "a"}, paths={"/p/": "p"})
    assert routes.write_map_files(more, paths, maps) == [paths["exact"], paths["paths"]]
    paths["wildcard"].unlink()
    assert routes.write_map_files(more, paths, more) == []
    assert routes.write_map_files(more, paths) == [paths["wildcard"]]


def test_runtime_commands_add_and_change_before_they_delete():
    old = RouteMaps(exact={"a.com/": "a", "b.com/": "b"}, paths={"/s": "s"})
    new = RouteMaps(exact={"a.com/": "a2", "c.com/": "c"}, wildcard={".w.com/": "w"})
    exact, wild, paths = PATHS["exact"], PATHS["wildcard"], PATHS["paths"]
    assert runtime_commands(old, new, PATHS) == [
        f"set map {exact} a.com/ a2",
        f"add map {exact} c.com/ c",
        f"add map {wild} .w.com/ w",
        f"del map {exact} b.com/",
        f"del map {paths} /s",
    ]
    assert runtime_commands(new, new, PATHS) == []


def test_frontend_lines_end_in_404_only_without_the_operators_own_backends():
    lines = routes.frontend_lines(PATHS, ["bind :80", "mode http"])
    assert "http-request return status 404 unless { var(txn.synapse_route) -m found }" in lines
    assert (
        lines[-1] == "use_backend %[var(txn.synapse_route)] if { var(txn.synapse_route) -m found }"
    )
    for own in ("default_backend www", "use_backend x if { path_beg /x }"):
        assert not any("404" in line for line in routes.frontend_lines(PATHS, [own]))


def test_routes_render_into_the_shared_frontend_only_when_a_service_has_them():
    config = haproxy_config(shared_frontend=["bind 127.0.0.1:8080"])
    plain = render([service("web", [server("10.0.0.1", 80)], backend_only=True)], config).text
    assert "synapse_route" not in plain
    routed = service("web", [server("10.0.0.1", 80)], backend_only=True,
                     routes={"hosts": ["a.com"]})  # fmt: skip
    text = render([routed], config).text
    assert "map_beg(/tmp/synapse-test/haproxy.routes-exact.map)" in text


def _check(
    tmp_path: Path, services: dict, capsys, shared: bool = True, mode: str = "mode http"
) -> tuple[int, str]:
    path = tmp_path / "synapse.json"
    haproxy = {"config_file_path": str(tmp_path / "h.cfg"), "reload_command": "true"}
    if shared:
        haproxy["shared_frontend"] = ["bind 127.0.0.1:8080", mode]
    path.write_text(json.dumps({"haproxy": haproxy, "services": services}))
    try:
        # --config-only: the file alone, no `haproxy -c` (a process) in the unit tier
        code = synapse_main(["-c", str(path), "-k", "--config-only"])
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


def _svc(**routes_: list[str]) -> dict:
    return {"discovery": {"method": "base"}, "haproxy": {"routes": routes_}}


def test_check_config_refuses_a_collision_naming_both_services(tmp_path, capsys):
    services = {"shop": _svc(hosts=["a.com"]), "shop2": _svc(hosts=["a.com"], paths=["/"])}
    code, err = _check(tmp_path, services, capsys)
    assert code == 2
    assert "host a.com path / is routed to two services: 'shop' and 'shop2'" in err
    code, err = _check(tmp_path, {"shop": _svc(hosts=["a.com"])}, capsys)
    assert code == 0, err


def test_check_config_names_the_bad_host(tmp_path, capsys):
    code, err = _check(tmp_path, {"shop": _svc(hosts=["A.com"])}, capsys)
    assert code == 2
    assert "services.shop.haproxy.routes.hosts" in err and "must be lowercase" in err


def test_check_config_refuses_routes_without_a_shared_frontend(tmp_path, capsys):
    code, err = _check(tmp_path, {"shop": _svc(hosts=["a.com"])}, capsys, shared=False)
    assert code == 2
    assert "services shop have haproxy.routes, which need haproxy.shared_frontend" in err


def test_an_incremental_render_adds_and_drops_the_route_lines():
    """Routes are per service, the lookup lines belong to the shared frontend: a service
    gaining or losing its routes must re-render the frontend, not only its piece."""
    config = haproxy_config(shared_frontend=["bind 127.0.0.1:8080"])
    renderer = Renderer(config)
    a = server("10.0.0.1", 80)
    plain = [service("web", [a], backend_only=True), service("api", [a], backend_only=True)]
    routed = [plain[0], service("api", [a], backend_only=True, routes={"paths": ["/api"]})]
    assert "synapse_route" not in renderer.render(plain, {}, changed_ids=()).text
    assert "synapse_route" in renderer.render(routed, {}, changed_ids=()).text
    assert "synapse_route" not in renderer.render(plain, {}, changed_ids=()).text
    # a route change alone leaves the config text as it is: only the maps change
    more = [plain[0], service("api", [a], backend_only=True, routes={"paths": ["/api", "/v2"]})]
    assert renderer.render(more, {}, changed_ids=()).text == renderer.render(routed, {}).text


def test_check_config_refuses_routes_on_a_tcp_shared_frontend(tmp_path, capsys):
    code, err = _check(tmp_path, {"shop": _svc(hosts=["a.com"])}, capsys, mode="mode tcp")
    assert code == 2
    assert "haproxy.routes need an HTTP shared frontend" in err


@pytest.mark.parametrize(
    ("host", "hint"),
    [
        ("bücher.example", "; clients send it as 'xn--bcher-kva.example': write that"),
        ("*.bücher.example", "; clients send it as '*.xn--bcher-kva.example': write that"),
        ("straße.example", ""),  # IDNA 2003 says 'strasse', browsers 'xn--strae-oqa': none
    ],
)
def test_an_internationalised_route_host_says_its_ascii_form(host: str, hint: str) -> None:
    # review s34: the Host header carries the punycode form; the error said only "not a DNS name"
    with pytest.raises(ValueError) as caught:
        routes.check_host(host)
    assert str(caught.value).endswith(f"no port, no scheme{hint}")
