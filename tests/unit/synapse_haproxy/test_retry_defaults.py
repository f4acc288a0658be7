"""The retries a managed-mode HTTP backend gets by default: a crash (connection refused or
reset, closed before an answer) is retried on another server, a slow answer is not. With
`response-timeout` in the default, `timeout server 3s` and a GET taking 5 s ran on 4
servers and answered 504 after 12.0 s (review s27, /tmp/rev/s27/longconn longpoll)."""

from __future__ import annotations

from pathlib import Path

from haproxy_helpers import haproxy_config

from synapse.config import ServiceConfig
from synapse.haproxy.resilience import extra_backend_lines
from synapse.resilience_config import RetriesConfig


def _lines(tmp_path: Path, **haproxy) -> list[str]:
    hap = haproxy_config(config_file_path=str(tmp_path / "h.cfg"), reload_command=None,
                         managed={}, defaults=["mode http", "timeout server 3s"])  # fmt: skip
    service = ServiceConfig.model_validate(
        {"discovery": {"method": "base"}, "haproxy": {"port": 3300, **haproxy}}
    )
    return extra_backend_lines(hap, service, [])


def test_a_slow_answer_is_not_retried_by_default(tmp_path: Path):
    assert RetriesConfig().retry_on == ["conn-failure", "empty-response"]
    assert _lines(tmp_path) == [
        "retries 3",
        "retry-on conn-failure empty-response",
        "http-request disable-l7-retry unless { method GET HEAD OPTIONS }",
        "option redispatch 1",
    ]


def test_response_timeout_when_asked(tmp_path: Path):
    asked = {"retry_on": ["conn-failure", "empty-response", "response-timeout"]}
    assert "retry-on conn-failure empty-response response-timeout" in _lines(
        tmp_path, retries=asked
    )
