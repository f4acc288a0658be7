"""Rendered sidecar and edge configs pass `haproxy -c` (the real binary)."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
from haproxy_helpers import DEFAULTS, haproxy_check, haproxy_config, render, server, service

A = server("10.0.0.1", 8080, "a")


B = server("10.0.0.2", 8080, "b")


C = server("10.0.0.3", 8080, "c")


HAPROXY = shutil.which("haproxy")


@pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed")
def test_sidecar_config_passes_haproxy_check(tmp_path: Path):
    config = haproxy_config(
        config_file_path=str(tmp_path / "h.cfg"),
        managed={"stop_on_exit": True},
        reload_command=None,
        defaults=[*DEFAULTS, "default-server inter 2s rise 2 fall 2"],
    )
    services = [
        service(
            "web",
            [dataclasses.replace(A, weight=5), B],
            port=3100,
            server_options="check maxconn 50",
            listen=["mode http", "option httplog", "balance leastconn", "option httpchk GET /h"],
        ),
        service("db", [C], port=3101, backend=["mode tcp"], frontend=["mode tcp"]),
        service("static", [server("127.0.0.1", 9999)], port=None, bind_address="127.0.0.1:3102"),
    ]
    haproxy_check(render(services, config).text, tmp_path)


@pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed")
def test_edge_config_with_shared_frontend_passes_haproxy_check(tmp_path: Path):
    config = haproxy_config(
        shared_frontend=["bind 127.0.0.1:8080", "mode http"],
        extra_sections={"listen stats": ["bind 127.0.0.1:9000", "mode http", "stats enable"]},
    )
    edge = [
        service(
            name,
            [server(f"10.1.0.{i}", 80, name) for i in range(1, 4)],
            backend_only=True,
            cookie_value_method="hash",
            backend=["mode http", "cookie SRV insert indirect nocache"],
            shared_frontend=[f"use_backend {name} if {{ hdr(host) -i {name}.example.com }}"],
        )
        for name in ("shop", "blog")
    ]
    rendered = render(edge, config)
    assert "frontend shop" not in rendered.text
    haproxy_check(rendered.text, tmp_path)
