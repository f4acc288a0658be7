"""issue 11 item 6 (files, no servers): where users' HAProxy lines enter a synapse config,
1.x-era titles and directives are rewritten with a warning or refused naming the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from smartstack.configfile import ConfigError
from synapse.config import load_synapse_config

TOP = {
    "haproxy": {
        "do_reloads": False,
        "config_file_path": "/tmp/unused-haproxy.cfg",
        "global": ["daemon", "nbproc 1"],
        "defaults": ["contimeout 5000", "option forceclose"],
        "extra_sections": {"listen stats :3212": ["mode http", "stats enable"]},
    },
    "admin": {"port": None},
}
ZK = {"method": "zookeeper", "hosts": ["127.0.0.1:2181"], "path": "/nerve/web"}


def write(path: Path, doc: dict) -> Path:
    path.write_text(json.dumps(doc))
    return path


def test_rewrites_in_every_place_with_warnings(tmp_path: Path) -> None:
    services = {"web": {"discovery": ZK, "haproxy": {
        "port": 3300, "listen": ["mode http", r"reqadd X-Src:\ synapse"],
        "shared_frontend": ["block if { src 10.0.0.0/8 }"]}}}  # fmt: skip
    config, warnings = load_synapse_config(
        write(tmp_path / "s.json", {**TOP, "services": services})
    )
    hap = config.haproxy
    assert hap is not None
    assert hap.global_ == ["daemon"] and hap.defaults == [
        "timeout connect 5000",
        "option httpclose",
    ]
    assert hap.extra_sections == {"listen stats": ["bind :3212", "mode http", "stats enable"]}
    web = config.services["web"].haproxy
    assert web.listen == ["mode http", "http-request add-header X-Src synapse"]
    assert web.shared_frontend == ["http-request deny if { src 10.0.0.0/8 }"]
    text = "\n".join(warnings)
    assert f"{tmp_path / 's.json'}: haproxy.extra_sections: 'listen stats :3212'" in text
    assert f"{tmp_path / 's.json'}: services.web.haproxy.listen[1]: HAProxy 1.x" in text
    assert len(warnings) == 6


def test_an_error_names_the_service_conf_dir_file(tmp_path: Path) -> None:
    services_dir = tmp_path / "services"
    services_dir.mkdir()
    backend = ["rspirep ^Server:.* Server:\\ x"]
    bad = write(services_dir / "api.json", {"discovery": ZK, "haproxy": {"backend": backend}})
    top = write(tmp_path / "s.json", {**TOP, "service_conf_dir": str(services_dir)})
    with pytest.raises(ConfigError) as caught:
        load_synapse_config(top)
    (line,) = caught.value.lines
    assert line.startswith(f"{bad}: services.api.haproxy.backend[0]: 'rspirep ")
    assert "use 'http-response replace-header NAME REGEX REPL'" in line


@pytest.mark.parametrize("body", [9000, True, {"bind": "127.0.0.1:9000"}])
def test_a_section_that_is_no_list_of_lines_is_an_error_naming_its_key(
    tmp_path: Path, body: object
) -> None:
    # Before (review s44 hunt): 9000 or true escaped as a TypeError (a traceback at -k, a
    # SIGHUP's "TypeError: 'int' object is not iterable"); a mapping's keys became lines.
    top = {**TOP, "haproxy": {**TOP["haproxy"], "extra_sections": {"listen stats": body}}}
    services = {"web": {"discovery": ZK, "haproxy": {"port": 3300}}}
    with pytest.raises(ConfigError) as caught:
        load_synapse_config(write(tmp_path / "s.json", {**top, "services": services}))
    (line,) = caught.value.lines
    assert line.startswith(f"{tmp_path / 's.json'}: haproxy.extra_sections.listen stats")
    assert "list" in line
