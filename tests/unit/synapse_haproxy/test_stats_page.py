"""Managed mode's HAProxy stats page and Prometheus exporter: config, rendering, clash check."""

from __future__ import annotations

from pathlib import Path

import pytest
from haproxy_helpers import haproxy_config, render, section, service
from pydantic import ValidationError

from synapse.config import SynapseConfig
from synapse.haproxy.stats_page import SECTION_TITLE
from synapse.port_clash import admin_port_clashes


def managed(tmp_path: Path, **stats: object):
    return haproxy_config(
        config_file_path=str(tmp_path / "h.cfg"), managed={"stats": stats}, reload_command=None
    )


def test_managed_mode_serves_the_exporter_and_stats_page_on_localhost_by_default(tmp_path: Path):
    text = render([service("web", [])], managed(tmp_path)).text
    lines = section(text, SECTION_TITLE)
    assert lines[:2] == ["mode http", "bind 127.0.0.1:8404"]
    assert "http-request use-service prometheus-exporter if { path /metrics }" in lines
    assert {"stats enable", "stats uri /stats", "stats refresh 10s"} <= set(lines)


def test_stats_keys_are_rendered(tmp_path: Path):
    config = managed(tmp_path, bind="10.0.0.5:9000", uri="/haproxy", metrics_path="/m", refresh=3)
    lines = section(render([service("web", [])], config).text, SECTION_TITLE)
    assert "bind 10.0.0.5:9000" in lines and "stats uri /haproxy" in lines
    assert "http-request use-service prometheus-exporter if { path /m }" in lines
    assert "stats refresh 3s" in lines


def test_disabled_or_not_managed_means_no_stats_section(tmp_path: Path):
    assert SECTION_TITLE not in render([service("web", [])], managed(tmp_path, enabled=False)).text
    assert SECTION_TITLE not in render([service("web", [])], haproxy_config()).text


@pytest.mark.parametrize(
    ("stats", "message"),
    [
        ({"bind": "8404"}, "is not HOST:PORT"),
        ({"bind": "127.0.0.1:99999"}, "is not HOST:PORT"),
        ({"uri": "stats"}, "is not a URL path"),
        ({"metrics_path": "/a b"}, "is not a URL path"),
        ({"uri": "/metrics"}, "must differ"),
        ({"refresh": 0}, "greater than or equal to 1"),
    ],
)
def test_bad_stats_keys_are_refused_with_the_key(tmp_path: Path, stats: dict, message: str):
    with pytest.raises(ValidationError) as error:
        managed(tmp_path, **stats)
    assert message in str(error.value) and "stats" in str(error.value)


def synapse(admin_port: int, **stats: object) -> SynapseConfig:
    return SynapseConfig.model_validate(
        {
            "haproxy": {"config_file_path": "/tmp/x.cfg", "managed": {"stats": stats}},
            "services": {"web": {"discovery": {"method": "base"}}},
            "admin": {"port": admin_port},
        }
    )


def test_admin_port_on_the_stats_address_is_a_clash():
    [line] = admin_port_clashes(synapse(8404))
    assert "admin.port 8404" in line and "haproxy.managed.stats.bind" in line
    assert admin_port_clashes(synapse(8404, bind="127.0.0.1:8405")) == []
    assert admin_port_clashes(synapse(8404, enabled=False)) == []
    assert admin_port_clashes(synapse(8404, bind="10.0.0.1:8404")) == []
