"""A bind widened to a wildcard keeps the old address while its socket listens (kept_binds).

The reload's resets themselves: tests/integration/synapse/test_synapse_bind_widen.py.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from haproxy_helpers import haproxy_config, section, server, service

from synapse.haproxy.kept_binds import KeptBinds
from synapse.haproxy.render import Renderer

A = server("10.0.0.1", 8080, "a")


def _listening(*addresses: tuple[str, int]):
    asked: list[int] = []

    def listening() -> list[tuple[str, int, str]]:
        asked.append(1)
        return [(ip, port, str(i)) for i, (ip, port) in enumerate(addresses)]

    return listening, asked


def _renderer(path: Path, *live: tuple[str, int]) -> Renderer:
    renderer = Renderer(haproxy_config(config_file_path=str(path)))
    renderer.kept_binds.listening = _listening(*live)[0]
    return renderer


def _web(address: str, **haproxy) -> list:
    return [service("web", [A], port=3100, bind_address=address, **haproxy)]


def test_a_new_renderer_keeps_the_address_the_running_file_binds_while_it_listens(tmp_path):
    path = tmp_path / "haproxy.cfg"
    path.write_text(_renderer(path).render(_web("127.0.0.1")).text)  # what HAProxy runs
    # (a new renderer: a SIGHUP of the haproxy block, or a synapse restart that adopts)
    text = _renderer(path, ("127.0.0.1", 3100)).render(_web("0.0.0.0")).text
    assert section(text, "frontend web") == [
        "bind 127.0.0.1:3100",
        "bind 0.0.0.0:3100",
        "default_backend web",
    ]
    # HAProxy started from nothing: no socket there, no line
    text = _renderer(path).render(_web("0.0.0.0")).text
    assert section(text, "frontend web") == ["bind 0.0.0.0:3100", "default_backend web"]


def test_one_renderer_remembers_what_it_rendered_without_a_file(tmp_path):
    renderer = _renderer(tmp_path / "none.cfg", ("127.0.0.1", 3100))
    for address in ("0.0.0.0", "127.0.0.1"):  # (wide first: its answer must not stick)
        renderer.render(_web(address))
    text = renderer.render(_web("0.0.0.0")).text
    assert section(text, "frontend web")[:2] == ["bind 127.0.0.1:3100", "bind 0.0.0.0:3100"]
    text = renderer.render(_web("127.0.0.1")).text  # its own address again
    assert section(text, "frontend web") == ["bind 127.0.0.1:3100", "default_backend web"]


@pytest.mark.parametrize(
    ("old", "new", "kept"),
    [
        ("127.0.0.1:80", "0.0.0.0:80", ["bind 127.0.0.1:80"]),
        ("localhost:80", "*:80", ["bind localhost:80"]),
        ("127.0.0.1:80", ":80 accept-proxy", ["bind 127.0.0.1:80 accept-proxy"]),
        ("127.0.0.1:80", ":::80", ["bind 127.0.0.1:80"]),
        ("0.0.0.0:80", ":::80", ["bind 0.0.0.0:80"]),  # (a v4 listener beats a dual one)
        ("::1:80", ":::80", ["bind ::1:80"]),
        ("127.0.0.1:80,127.0.0.3:80", "0.0.0.0:80", ["bind 127.0.0.1:80"]),  # (listening)
        ("127.0.0.1:80", ":::80 v6only", []),
        ("::1:80", "0.0.0.0:80", []),
        ("127.0.0.1:80", "127.0.0.2:80", []),  # moved: refused from then on anyway
        ("0.0.0.0:80", "127.0.0.1:80", []),  # narrowed: the new socket takes them at once
        ("127.0.0.1:80", "0.0.0.0:81", []),
        ("web.example:80", "0.0.0.0:80", []),
        ("127.0.0.1:80", "0.0.0.0:80,127.0.0.1:80", []),  # still bound
        ("unix@/run/web.sock", "0.0.0.0:80", []),
    ],
)
def test_which_addresses_a_wildcard_keeps(tmp_path, old, new, kept):
    path = tmp_path / "haproxy.cfg"
    path.write_text(f"frontend web\n    bind {old}\n    default_backend web\n\nbackend web\n")
    listening, _ = _listening(("127.0.0.1", 80), ("::1", 80), ("0.0.0.0", 80))
    assert KeptBinds(path, listening).lines("frontend web", [f"bind {new}"]) == kept


def test_nothing_is_read_or_asked_without_a_wildcard_and_a_change_is_asked_once(tmp_path):
    path = tmp_path / "haproxy.cfg"
    path.write_text("frontend web\n    bind 127.0.0.1:80\n")
    listening, asked = _listening(("127.0.0.1", 80))
    kept = KeptBinds(path, listening)
    path.unlink()  # (read when first needed: it is not)
    assert kept.lines("frontend web", ["mode http", "bind 127.0.0.1:80"]) == []
    assert kept.lines("frontend web", ["bind 0.0.0.0:80"]) == ["bind 127.0.0.1:80"]
    assert kept.lines("frontend web", ["bind 0.0.0.0:80"]) == ["bind 127.0.0.1:80"]
    assert asked == [1]


def test_the_change_is_logged_once(tmp_path, caplog):
    path = tmp_path / "haproxy.cfg"
    path.write_text("frontend web\n    bind 127.0.0.1:80\n")
    listening, _ = _listening(("127.0.0.1", 80))
    caplog.set_level(logging.INFO, logger="synapse.haproxy")
    kept = KeptBinds(path, listening)
    for lines in (["bind 0.0.0.0:80"], ["bind 0.0.0.0:80", "mode tcp"], ["bind *:80"]):
        assert kept.lines("frontend web", lines)
    path.write_text("frontend web\n    bind 127.0.0.1:80\n    bind 0.0.0.0:80\n")  # loaded
    assert KeptBinds(path, listening).lines("frontend web", ["bind 0.0.0.0:80"])
    logged = [r for r in caplog.records if "haproxy_bind_kept" in r.getMessage()]
    assert len(logged) == 1, [r.getMessage() for r in logged]


def test_the_edge_tls_bind_widened_on_the_shared_frontend_keeps_its_address(tmp_path):
    path = tmp_path / "haproxy.cfg"
    edge = {"shared_frontend": ["bind 127.0.0.1:80", "mode http"], "tls": {"cert_dir": "/c"}}
    renderer = Renderer(haproxy_config(config_file_path=str(path), **edge))
    path.write_text(renderer.render(_web("127.0.0.1")).text)
    wide = {**edge, "shared_frontend": ["bind 0.0.0.0:80", "mode http"]}
    renderer = Renderer(haproxy_config(config_file_path=str(path), bind_address="0.0.0.0", **wide))
    renderer.kept_binds.listening = _listening(("127.0.0.1", 80), ("127.0.0.1", 443))[0]
    lines = section(renderer.render(_web("0.0.0.0")).text, "frontend shared-frontend")
    binds = [line for line in lines if line.startswith("bind ")]
    tls = binds[1].split(" ", 2)[2]  # (its options: ssl crt-list ...)
    assert binds[0] == "bind 0.0.0.0:80" and binds[1].startswith("bind 0.0.0.0:443 ssl ")
    assert binds[2:] == ["bind 127.0.0.1:80", f"bind localhost:443 {tls}"]


def test_sections_of_services_that_left_are_forgotten(tmp_path):
    # Soak s45: every service frontend ever rendered kept its binds here for good (a
    # SIGHUP with a new service name each time: +1 section a reload).
    path = tmp_path / "haproxy.cfg"
    renderer = _renderer(path)
    for k in range(100):
        tmp = service(f"tmp{k}", [A], port=3200, bind_address="127.0.0.1")
        renderer.render([*_web("127.0.0.1"), tmp])
        renderer.render(_web("127.0.0.1"))  # removed
    seen = renderer.kept_binds._seen
    assert "frontend web" in seen and len(seen) <= 2 * 2 + 16 + 1
    # a widened bind of a service still configured keeps its old address as before
    renderer.kept_binds.listening = _listening(("127.0.0.1", 3100))[0]
    assert "bind 127.0.0.1:3100" in section(renderer.render(_web("0.0.0.0")).text, "frontend web")


def test_a_service_that_left_while_its_address_listens_keeps_it_when_added_back(tmp_path):
    # Review s46: api widened (its 127.0.0.1 socket kept), then removed by a SIGHUP with
    # 22 others (the forgetting's turn) and added back by the next before the removal's
    # reload ran: its 127.0.0.1 line was gone, and that reload reset its clients (16 of 16)
    renderer = _renderer(tmp_path / "haproxy.cfg", ("127.0.0.1", 3300), ("0.0.0.0", 3300))
    api = service("api", [A], port=3300, bind_address="127.0.0.1")
    wide = service("api", [A], port=3300, bind_address="0.0.0.0")
    others = [service(f"t{k}", [A], port=3400 + k, bind_address="127.0.0.1") for k in range(22)]
    renderer.render([*_web("0.0.0.0"), api, *others])
    assert "bind 127.0.0.1:3300" in section(
        renderer.render([*_web("0.0.0.0"), wide, *others]).text, "frontend api"
    )
    renderer.render(_web("0.0.0.0"))  # api and the others removed
    assert len(renderer.kept_binds._seen) == 2  # (the others: nothing listens there)
    text = renderer.render([*_web("0.0.0.0"), wide]).text
    assert section(text, "frontend api")[:2] == ["bind 127.0.0.1:3300", "bind 0.0.0.0:3300"]


def test_renames_on_a_listening_port_stay_bounded(tmp_path):
    renderer = _renderer(tmp_path / "haproxy.cfg", ("127.0.0.1", 3200), ("127.0.0.1", 3100))
    for k in range(60):  # (each rename's port listens: the current one binds it)
        renderer.render([*_web("127.0.0.1"), service(f"t{k}", [A], port=3200)])
    assert len(renderer.kept_binds._seen) <= 2 * 3 + 16 + 1
