"""``option idle-close-on-response`` on HTTP frontends (a reload does not drop idle kept-alive
connections; the real-HAProxy proof is tests/integration/synapse_haproxy/
test_reload_keepalive.py), in managed mode and the Airbnb way."""

from __future__ import annotations

from pathlib import Path

from haproxy_helpers import haproxy_config, section, server, service

from synapse.haproxy.render import Renderer
from synapse.haproxy.settings import running_settings, settings_for

A = server("10.0.0.1", 8080, "a")
LINE = "option idle-close-on-response"
V26, V24 = (2, 6, 12), (2, 4, 22)


def _managed(tmp_path: Path, **overrides):
    return haproxy_config(
        config_file_path=str(tmp_path / "h.cfg"), managed={}, reload_command=None, **overrides
    )


def _text(config, version, *services) -> str:
    return Renderer(config, settings_for(config, version)).render(list(services)).text


def test_managed_http_frontends_keep_idle_connections_through_a_reload(tmp_path: Path):
    config = _managed(tmp_path)  # (defaults: mode http)
    text = _text(config, V26, service("web", [A], port=3000))
    assert LINE in section(text, "frontend web")
    assert LINE not in section(text, "defaults")


def test_not_for_tcp_frontends_or_older_or_unknown_haproxy(tmp_path: Path):
    tcp = service("db", [A], port=3001, frontend=["mode tcp"])
    assert LINE not in _text(_managed(tmp_path), V26, tcp)
    assert LINE not in _text(_managed(tmp_path), V24, service("web", [A], port=3000))
    assert LINE not in _text(_managed(tmp_path), None, service("web", [A], port=3000))


def test_the_airbnb_way_too_once_the_running_haproxy_says_its_version(tmp_path: Path):
    """HAProxy its own unit (docs/deploy.md): reloads drop idle connections there too.
    Its version comes from its runtime API (the controller's read): until then, none."""
    airbnb = haproxy_config(config_file_path=str(tmp_path / "h.cfg"))
    web = service("web", [A], port=3000)
    assert LINE in section(_text(airbnb, V26, web), "frontend web")
    assert LINE not in _text(airbnb, V24, web)
    start = settings_for(airbnb)  # (controller.start: no `haproxy -v` for another's HAProxy)
    assert start.version is None and LINE not in _text(airbnb, None, web)
    followed = running_settings(start, airbnb, V26)
    assert followed is not None and followed.http_frontend_lines == (LINE,)
    assert running_settings(followed, airbnb, V26) is None  # (the same: kept)
    assert running_settings(followed, airbnb, None) is None  # (it did not answer: kept)
    upgraded = running_settings(settings_for(airbnb, V24), airbnb, V26)
    assert upgraded is not None and upgraded.version == V26
    managed = _managed(tmp_path)  # (its binary's `haproxy -v` decides, not the runtime API)
    assert running_settings(settings_for(managed, V24), managed, V26) is None


def test_the_operator_decides_in_defaults_or_in_a_frontend(tmp_path: Path):
    said = _managed(tmp_path, defaults=["mode http", f"no {LINE}"])
    assert settings_for(said, V26).http_frontend_lines == ()
    own = service("web", [A], port=3000, frontend=[f"no {LINE}"])
    lines = section(_text(_managed(tmp_path), V26, own), "frontend web")
    assert lines.count(f"no {LINE}") == 1 and LINE not in lines


def test_the_shared_frontend_gets_it_too(tmp_path: Path):
    config = _managed(tmp_path, shared_frontend=["bind 127.0.0.1:80"])
    text = _text(config, V26, service("web", [A], port=3000))
    assert LINE in section(text, "frontend shared-frontend")
