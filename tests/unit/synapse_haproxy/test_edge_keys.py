"""Edge keys (pure): logging, proxy protocol, queue keys, TLS lines and runtime commands."""

from __future__ import annotations

from pathlib import Path

import pytest
from haproxy_helpers import haproxy_config, render, server, service
from pydantic import ValidationError

from synapse.config import ServiceHAProxyConfig
from synapse.edge_config import HAProxyLogging
from synapse.haproxy import edge, tls
from synapse.haproxy.configtext import parse_config

PATHS = tls.tls_paths(Path("/run/edge/haproxy.cfg"))


def test_logging_address_is_udp_or_a_unix_socket():
    assert HAProxyLogging(address="127.0.0.1:514").address == "127.0.0.1:514"
    assert HAProxyLogging(address="/dev/log").facility == "local0"
    for bad in ("stdout", "127.0.0.1", "host:99999", "dev/log"):
        with pytest.raises(ValidationError, match="host:port"):
            HAProxyLogging(address=bad)
    with pytest.raises(ValidationError, match="expected one of kern"):
        HAProxyLogging(address="/dev/log", facility="local9")


def test_log_lines_follow_the_frontend_mode():
    http = HAProxyLogging(address="/dev/log", format="httplog")
    assert edge.log_lines(http, "http") == ["log global", "option httplog"]
    assert edge.log_lines(http, "tcp") == ["log global", "option tcplog"]
    json_ = HAProxyLogging(address="/dev/log", format="json")
    assert "%ST" in edge.log_lines(json_, "http")[-1]
    assert "%ST" not in edge.log_lines(json_, "tcp")[-1]
    assert edge.log_lines(None, "http") == []


def test_every_generated_frontend_logs():
    config = haproxy_config(
        logging={"address": "127.0.0.1:514", "format": "httplog"},
        shared_frontend=["bind 127.0.0.1:80"],
    )
    text = render([service("web", [server("10.0.0.1", 80)], port=3100)], config).text
    sections = parse_config(text).sections
    assert "log 127.0.0.1:514 len 8192 local0" in sections["global"]
    for frontend in ("frontend web", "frontend shared-frontend"):
        assert [line for line in sections[frontend] if line.startswith(("log", "option"))] == [
            "log global",
            "option httplog",
        ]


def test_queue_and_proxy_keys_render():
    hap = {"send_proxy_v2": True, "maxconn": 5, "maxqueue": 0, "timeout_queue": 1500,
           "accept_proxy": True, "server_options": "check"}  # fmt: skip
    config = haproxy_config(accept_proxy=True, shared_frontend=["bind :80", "mode http"])
    text = render([service("web", [server("10.0.0.1", 80, "a")], port=3100, **hap)], config).text
    sections = parse_config(text).sections
    assert "bind localhost:3100 accept-proxy" in sections["frontend web"]
    assert "timeout queue 1500" in sections["backend web"]
    assert "bind :80 accept-proxy" in sections["frontend shared-frontend"]
    (line,) = [ln for ln in text.splitlines() if ln.strip().startswith("server a_")]
    assert line.endswith(" check send-proxy-v2 maxconn 5 maxqueue 0")


def test_timeout_queue_takes_haproxy_times_only():
    assert ServiceHAProxyConfig(timeout_queue="5s").timeout_queue == "5s"
    with pytest.raises(ValidationError, match="HAProxy time"):
        ServiceHAProxyConfig(timeout_queue="five seconds")


def test_tls_needs_the_shared_frontend():
    with pytest.raises(ValidationError, match="terminates TLS on the shared frontend"):
        haproxy_config(tls={"cert_dir": "/etc/certs"})


def test_tls_frontend_lines():
    config = haproxy_config(shared_frontend=[], tls={"cert_dir": "/c", "hsts": 60})
    assert config.tls is not None
    lines = tls.frontend_lines(config.tls, "0.0.0.0", True, PATHS)
    assert lines == [
        "bind 0.0.0.0:443 ssl crt-list /run/edge/haproxy.crt-list ssl-min-ver TLSv1.2 "
        "alpn h2,http/1.1 accept-proxy",
        'http-response set-header Strict-Transport-Security "max-age=60" if { ssl_fc }',
    ]


def test_tls_runtime_commands():
    a, b = Path("/c/a.pem"), Path("/c/b.pem")
    crt = PATHS.crt_list
    A, A2, B = tls.Cert("A"), tls.Cert("A2"), tls.Cert("B")
    assert tls.runtime_commands({a: A}, {a: A2, b: B}, PATHS) == [
        f"set ssl cert {a} <<\nA2\n",
        f"commit ssl cert {a}",
        f"new ssl cert {b}",
        f"set ssl cert {b} <<\nB\n",
        f"commit ssl cert {b}",
        f"add ssl crt-list {crt} {b}",
    ]
    assert tls.runtime_commands({a: A, b: B}, {b: B}, PATHS) == [
        f"del ssl crt-list {crt} {a}",
        f"del ssl cert {a}",
    ]
    assert tls.runtime_commands({a: A}, {a: tls.Cert("A\n")}, PATHS) == []
