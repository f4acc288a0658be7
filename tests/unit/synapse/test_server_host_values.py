"""Server hosts the renderer would skip (every request a 503) are refused at load, naming
the file, the key and what was probably meant; what the renderer writes stays accepted."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from smartstack.configfile import ConfigError
from synapse.config import load_synapse_config
from synapse.haproxy.specs import _bad_server_field
from synapse.model import Server


def write(tmp_path: Path, service: dict[str, object]) -> Path:
    path = tmp_path / "synapse.yaml"
    path.write_text(yaml.safe_dump({"services": {"web": service}}, allow_unicode=True))
    return path


def default_server(tmp_path: Path, host: str) -> Path:
    servers = [{"name": "d1", "host": host, "port": 8080}]
    return write(tmp_path, {"discovery": {"method": "base"}, "default_servers": servers})


@pytest.mark.parametrize(
    ("host", "meant"),
    [
        ("", "is empty"),
        ("127.0.0.1 ", "did you mean '127.0.0.1'"),
        ("bücher.example", "IDNA form 'xn--bcher-kva.example'"),
        ("fe80::1%lo", "scoped IPv6 address"),
        ("127.0.0.1:80", "write host: '127.0.0.1' and port: 80"),
        ("[::1]", "did you mean '::1'"),
    ],
)
def test_a_default_server_host_the_renderer_skips_is_a_load_error(
    tmp_path: Path, host: str, meant: str
) -> None:
    path = default_server(tmp_path, host)
    with pytest.raises(ConfigError) as caught:
        load_synapse_config(path)
    text = str(caught.value)
    assert str(path) in text and "default_servers[0].host" in text and meant in text


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "::1", "fd00::13", "localhost.", "LOCALHOST", "my_host.local", "a.invalid"],
)
def test_hosts_the_renderer_writes_stay_accepted(tmp_path: Path, host: str) -> None:
    config, _ = load_synapse_config(default_server(tmp_path, host))
    assert config.services["web"].default_servers[0].host == host
    assert _bad_server_field(Server(name="d1", host=host, port=8080)) is None


def test_an_erb_host_of_an_empty_variable_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BACKEND_HOST", "")
    path = tmp_path / "synapse.yaml"
    path.write_text(
        "services:\n  web:\n    discovery: {method: base}\n    default_servers:\n"
        "      - {name: d1, host: \"<%= ENV['BACKEND_HOST'] %>\", port: 8080}\n"
    )
    with pytest.raises(ConfigError, match=r"default_servers\[0\]\.host is empty"):
        load_synapse_config(path)


def test_a_dns_server_name_is_checked_but_an_idn_name_resolves(tmp_path: Path) -> None:
    def dns(host: str) -> Path:
        servers = [{"name": "a", "host": host, "port": 80}]
        return write(tmp_path, {"discovery": {"method": "dns", "servers": servers}})

    with pytest.raises(ConfigError, match=r"discovery: servers\[0\]\.host '127.0.0.1 '"):
        load_synapse_config(dns("127.0.0.1 "))
    assert load_synapse_config(dns("bücher.example"))[0].services["web"]


@pytest.mark.parametrize(
    ("path", "meant"), [("/nerve/./web", "/nerve/web"), ("/nerve/web ", "/nerve/web")]
)
def test_a_zookeeper_path_kazoo_refuses_or_misreads_is_a_load_error(
    tmp_path: Path, path: str, meant: str
) -> None:
    discovery = {"method": "zookeeper", "hosts": ["127.0.0.1:2181"], "path": path}
    with pytest.raises(ConfigError) as caught:
        load_synapse_config(write(tmp_path, {"discovery": discovery}))
    assert "services.web.discovery: path:" in str(caught.value)
    assert f"did you mean {meant!r}" in str(caught.value)
