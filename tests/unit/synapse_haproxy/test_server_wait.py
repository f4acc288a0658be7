"""The wait for a usable server (synapse.haproxy.server_wait) as rendered: the Lua file
beside the config, its ``lua-load-per-thread`` line, the backend's first rule (`haproxy -c`
and real requests: tests/integration/synapse_haproxy/test_wait_for_server.py)."""

from __future__ import annotations

from pathlib import Path

from haproxy_helpers import haproxy_config, section, server, service

from synapse.config import ServiceConfig
from synapse.haproxy import server_wait, settings
from synapse.haproxy.render import Renderer
from synapse.haproxy.settings import settings_for
from synapse.model import DesiredService

A = server("10.0.0.1", 8080, "a")
WAIT = f"http-request lua.{server_wait.ACTION}"


def managed(tmp_path: Path, **overrides):
    return haproxy_config(config_file_path=str(tmp_path / "haproxy.cfg"), reload_command=None,
                          managed={"stats": {"enabled": False}}, **overrides)  # fmt: skip


def backend(text: str, name: str = "web") -> list[str]:
    return [line.strip() for line in section(text, f"backend {name}")]


def zoned(name: str) -> DesiredService:
    plain = service(name, [A])
    config = ServiceConfig.model_validate(
        {**plain.config.model_dump(), "zone_routing": {"zones": ["az1", "az2"]}}
    )
    return DesiredService(name, config, plain.servers)


def test_managed_mode_waits_one_second_by_default_for_a_zone_routed_service(
    tmp_path: Path,
) -> None:
    text = Renderer(managed(tmp_path)).render([zoned("shop"), service("web", [A])]).text
    lua = tmp_path / "haproxy-synapse-wait.lua"
    assert lua.read_text() == server_wait.LUA
    assert f"lua-load-per-thread {lua}" in section(text, "global")
    assert backend(text, "shop")[0] == f"{WAIT} 1000"  # first: before the operator's rules
    # Not for the others: a dead one would hold each request (and a slot) before its 503.
    assert not any("lua." in line for line in backend(text, "web"))


def test_managed_mode_waits_one_second_by_default_for_a_service_haproxy_checks(
    tmp_path: Path,
) -> None:
    """A panic (all checks timed out) leaves a gap of 1-2 ms, up to 2 s for an adopted
    HAProxy, with no usable server: the wait holds its requests (before: 503s)."""
    checks = {"enabled": True, "path": "/health"}
    services = [
        service("web", [A], health_check=checks),
        service("obs", [A], observe={"layer": "layer4"}),  # (observe implies the checks)
        service("own", [A], server_options="check inter 1s"),
        service("dflt", [A], backend=["default-server check"]),
        service("kept", [A], health_check=checks, wait_for_server_ms=0),  # (explicit: kept)
        service("plain", [A]),
        service("off", [A], health_check={"enabled": False}),
        service("ssl", [A], server_options="check-ssl"),  # (not a check by itself)
    ]
    text = Renderer(managed(tmp_path)).render(services).text
    for name in ("web", "obs", "own", "dflt"):
        assert backend(text, name)[0] == f"{WAIT} 1000", name
    for name in ("kept", "plain", "off", "ssl"):
        assert not any("lua." in line for line in backend(text, name)), name
    # the defaults' own `default-server check`: every service is checked
    on = managed(tmp_path, defaults=["mode http", "default-server check"])
    cancelled = [service("nc", [A], server_options="no-check"),
                 service("bnc", [A], backend=["default-server no-check"])]  # fmt: skip
    text = Renderer(on).render([service("plain", [A]), *cancelled]).text
    assert backend(text, "plain")[0] == f"{WAIT} 1000"
    for name in ("nc", "bnc"):  # `no-check` after it: HAProxy checks nothing there
        assert not any("lua." in line for line in backend(text, name)), name
    # Airbnb mode: as before (synapse does not know its HAProxy has Lua)
    airbnb = haproxy_config(config_file_path=str(tmp_path / "a.cfg"))
    assert "lua." not in Renderer(airbnb).render(services[:1]).text


def test_a_service_and_the_haproxy_block_set_it(tmp_path: Path) -> None:
    config = managed(tmp_path, wait_for_server_ms=1500)
    services = [service("web", [A]), service("api", [A], wait_for_server_ms=200),
                service("off", [A], wait_for_server_ms=0)]  # fmt: skip
    text = Renderer(config).render(services).text
    assert backend(text)[0] == f"{WAIT} 1500"
    assert backend(text, "api")[0] == f"{WAIT} 200"
    assert not any("lua." in line for line in backend(text, "off"))


def test_tcp_mode_waits_with_an_inspect_delay(tmp_path: Path) -> None:
    own = ["mode tcp", "tcp-request inspect-delay 3s"]
    services = [service("db", [A], listen=["mode tcp"]), service("own", [A], backend=own)]
    text = Renderer(managed(tmp_path, wait_for_server_ms=1000)).render(services).text
    action = f"tcp-request content lua.{server_wait.ACTION} 1000"
    assert backend(text, "db")[:2] == ["tcp-request inspect-delay 1500ms", action]
    assert backend(text, "own")[0] == action  # the operator's delay is kept, not doubled
    assert [ln for ln in backend(text, "own") if "inspect-delay" in ln] == [
        "tcp-request inspect-delay 3s"
    ]


def test_airbnb_mode_adds_nothing_unless_asked(tmp_path: Path) -> None:
    path = str(tmp_path / "haproxy.cfg")
    text = Renderer(haproxy_config(config_file_path=path)).render([service("web", [A])]).text
    assert "lua-load" not in text and "lua." not in text and not list(tmp_path.iterdir())
    asked = haproxy_config(config_file_path=path, wait_for_server_ms=800)
    text = Renderer(asked).render([service("web", [A])]).text
    assert backend(text)[0] == f"{WAIT} 800" and "lua-load-per-thread" in text


def test_an_unwritable_lua_file_leaves_the_wait_out(tmp_path: Path) -> None:
    (tmp_path / "haproxy-synapse-wait.lua").mkdir()  # (a directory: the rename fails)
    text = Renderer(managed(tmp_path)).render([service("web", [A])]).text
    assert "lua-load" not in text and "lua." not in text  # the config loads; no wait


def test_the_render_is_the_same_every_time(tmp_path: Path) -> None:
    config = managed(tmp_path)
    first = Renderer(config).render([service("web", [A])]).text
    lua = tmp_path / "haproxy-synapse-wait.lua"
    written = lua.stat().st_mtime_ns
    assert Renderer(config).render([service("web", [A])]).text == first
    assert lua.stat().st_mtime_ns == written  # the same file: not written again


def test_a_managed_haproxy_without_lua_gets_no_wait(tmp_path: Path, monkeypatch, caplog):
    """Built without Lua (USE_LUA off; ``haproxy -vv``, faked here), or before 2.4 (no
    lua-load-per-thread): HAProxy refused the whole config (review s40 cr-hold: a managed
    HAProxy 2.6.0 built without Lua served nothing)."""
    config = haproxy_config(
        config_file_path=str(tmp_path / "haproxy.cfg"),
        reload_command=None,
        managed={"binary": "/opt/lb/haproxy", "stats": {"enabled": False}},
    )
    monkeypatch.setitem(settings._LUA, "/opt/lb/haproxy", False)
    for version, why in [((2, 6, 0), "built without Lua"), ((2, 2, 30), "no lua-load-per")]:
        text = Renderer(config, settings_for(config, version)).render([zoned("web")]).text
        assert "lua" not in text, version
        said = [vars(r).get("smartstack_fields", {}) for r in caplog.records]
        assert any(why in fields.get("reason", "") for fields in said), said
    monkeypatch.setitem(settings._LUA, "/opt/lb/haproxy", True)
    text = Renderer(config, settings_for(config, (2, 6, 0))).render([zoned("web")]).text
    assert backend(text)[0] == f"{WAIT} 1000" and "lua-load-per-thread" in text


def test_the_lua_never_walks_the_servers_snapshot() -> None:
    """``core.backends[...].servers`` is HAProxy 2.6's table of the servers at start: it keeps
    the ones ``del server`` freed (reading one crashed the worker) and lacks added ones."""
    assert ".servers" not in server_wait.LUA and "get_stats" not in server_wait.LUA


def test_the_lua_file_is_back_before_haproxy_reads_a_config_naming_it(tmp_path: Path) -> None:
    """A purged directory took the file along: the next reload's config named a missing
    file and was refused as a whole (review s40, test_sockets_removed)."""
    config = managed(tmp_path / "gone")
    (tmp_path / "gone").mkdir()
    text = Renderer(config).render([zoned("shop")]).text
    lua = tmp_path / "gone" / "haproxy-synapse-wait.lua"
    lua.unlink()
    (tmp_path / "gone").rmdir()
    server_wait.before_read("global\n    maxconn 10\n", config)  # not named: left alone
    assert not lua.exists()
    server_wait.before_read(text, config)
    assert lua.read_text() == server_wait.LUA
