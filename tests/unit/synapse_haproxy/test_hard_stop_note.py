"""The note ``synapse -k`` and the start give when ``hard-stop-after`` would cut ``mode tcp``
services' connections after every reload (3 of 3 45-s TCP streams cut at 30 s with the
recommended ``hard-stop-after 30s``: the reviewer's exp4)."""

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


def test_a_tcp_service_whose_connections_the_hard_stop_cuts():
    db = _service(listen=["mode tcp"])
    note = _note("30s", {"web": _service(3301), "db": db})
    assert note is not None and "hard-stop-after 30s" in note
    assert "db (30s)" in note and "web" not in note
    assert _note("30000", {"db": db}) is not None  # (a bare number is milliseconds)
    own = _service(frontend=["mode tcp", "timeout client 1h"])  # its own timeout counts
    assert "db (1h)" in (_note("31m", {"db": own}) or "")
    assert "no timeout client" in (_note("1h", {"db": db}, ["mode tcp"]) or "")


def test_no_note_above_the_timeout_for_http_or_without_the_line():
    db = _service(listen=["mode tcp"])
    assert _note("31s", {"db": db}) is None  # (above timeout client: chosen for TCP)
    assert _note("30m", {"db": _service(frontend=["mode tcp", "timeout client 10m"])}) is None
    assert _note("30s", {"web": _service()}) is None  # HTTP (defaults' mode)
    assert _note(None, {"db": db}) is None  # no hard stop: old workers wait for the last one
    assert _note("30s", {"db": _service(None, listen=["mode tcp"])}) is None  # backend only
    assert _note("30s", {"db": _service(listen=["mode tcp"], disabled=True)}) is None


def test_the_start_and_synapse_k_print_it(tmp_path: Path):
    hap = haproxy_config(config_file_path=str(tmp_path / "h.cfg"),
                         **{"global": ["hard-stop-after 30s"], "defaults": HTTP})  # fmt: skip
    config = SynapseConfig.model_validate(
        {"services": {"db": _service(listen=["mode tcp"]).model_dump()},
         "haproxy": hap.model_dump(by_alias=True)}
    )  # fmt: skip
    errors, notes = preflight(config, tmp_path / "synapse.yaml", full=False)
    assert not errors and any("hard-stop-after 30s" in note for note in notes), notes


def test_haproxy_ms():
    assert [haproxy_ms(t) for t in ("500", "2s", "1m", "1h", "10us")] == [
        500, 2000, 60000, 3600000, 0.01,
    ]  # fmt: skip
    assert haproxy_ms("2 s") is None and haproxy_ms("soon") is None
