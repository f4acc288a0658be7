"""The note ``synapse -k`` and the start give when ``hard-stop-after`` is set: it cuts, after
every reload, every HTTP response still running (streams, WebSocket, long-polls) and every
TCP session ``hard-stop-after`` later (review s27: 12 of 12 HTTP and TCP streams cut 30.2 s
after a reload with the examples' ``hard-stop-after 30s``; before, HTTP got no note, and
TCP only when ``timeout client``, an idle timeout, was at least the value)."""

from __future__ import annotations

from pathlib import Path

from haproxy_helpers import haproxy_config

from synapse.config import ServiceConfig, SynapseConfig
from synapse.haproxy.hard_stop import hard_stop_note
from synapse.preflight import preflight
from synapse.server_options import haproxy_ms

HTTP = ["mode http", "timeout connect 1s", "timeout client 30s", "timeout server 30s"]


def _service(port: int | None = 3300, **haproxy) -> ServiceConfig:
    block = {"port": port, **haproxy} if port else haproxy
    return ServiceConfig.model_validate({"discovery": {"method": "base"}, "haproxy": block})


def _note(hard: str | None, services: dict[str, ServiceConfig], defaults=HTTP) -> str | None:
    lines = ["maxconn 4096"] + ([f"hard-stop-after {hard}"] if hard else [])
    return hard_stop_note(haproxy_config(**{"global": lines, "defaults": defaults}), services)


def test_a_tcp_service_whose_sessions_the_hard_stop_cuts():
    db = _service(listen=["mode tcp"])
    note = _note("30s", {"db": db})
    assert note is not None and "hard-stop-after 30s" in note
    assert "every TCP session of db" in note and "HTTP" not in note
    assert _note("30000", {"db": db}) is not None  # (a bare number is milliseconds)
    # above the idle timeout still cuts a session that lasts longer (a pool's connection)
    assert _note("31s", {"db": db}) is not None
    assert _note("30m", {"db": _service(frontend=["mode tcp", "timeout client 10m"])})


def test_http_frontends_get_the_note_whatever_timeout_server_is():
    """`timeout server` is an idle timeout: 6 of 6 HTTP streams were cut 10.2 s after a
    reload with hard-stop-after 10s and timeout server 10s, which the docs said cut nothing."""
    for hard in ("30s", "10s", "1h"):
        note = _note(hard, {"web": _service(3301), "api": _service(3302)})
        assert note is not None and f"hard-stop-after {hard}" in note, hard
        assert "HTTP response" in note and "api, web" in note and "TCP" not in note
        assert "WebSocket" in note and "long-poll" in note
    both = _note("30s", {"web": _service(3301), "db": _service(listen=["mode tcp"])})
    assert both is not None and "of web and every TCP session of db" in both


def test_the_shared_frontend_counts_as_http():
    hap = haproxy_config(**{"global": ["hard-stop-after 1m"], "defaults": HTTP,
                            "shared_frontend": ["bind 127.0.0.1:80"]})  # fmt: skip
    note = hard_stop_note(hap, {"shop": _service(None, shared_frontend=["use_backend shop"])})
    assert note is not None and "of the shared frontend" in note


def test_no_note_without_the_line_or_a_frontend():
    db = _service(listen=["mode tcp"])
    assert _note(None, {"db": db, "web": _service(3301)}) is None  # old workers wait
    assert _note("30s", {"db": _service(None, listen=["mode tcp"])}) is None  # backend only
    assert _note("30s", {"db": _service(listen=["mode tcp"], disabled=True)}) is None
    assert _note("soon", {"web": _service()}) is None  # (not a time: HAProxy -c says so)


def test_the_start_and_synapse_k_print_it(tmp_path: Path):
    hap = haproxy_config(config_file_path=str(tmp_path / "h.cfg"),
                         **{"global": ["hard-stop-after 30s"], "defaults": HTTP})  # fmt: skip
    config = SynapseConfig.model_validate(
        {"services": {"db": _service(listen=["mode tcp"]).model_dump()},
         "haproxy": hap.model_dump(by_alias=True)}
    )  # fmt: skip
    errors, notes = preflight(config, tmp_path / "synapse.yaml", full=False)
    assert not errors and any("hard-stop-after 30s" in note for note in notes), notes
    config.services["db"] = _service(listen=["mode http"])  # HTTP only: a note too
    errors, notes = preflight(config, tmp_path / "synapse.yaml", full=False)
    assert not errors and any("HTTP response" in note for note in notes), notes


def test_haproxy_ms():
    assert [haproxy_ms(t) for t in ("500", "2s", "1m", "1h", "10us")] == [
        500, 2000, 60000, 3600000, 0.01,
    ]  # fmt: skip
    assert haproxy_ms("2 s") is None and haproxy_ms("soon") is None
