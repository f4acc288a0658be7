"""Issue 11: files shaped like real Airbnb/Yelp configs load as the Ruby daemons load them.

Every file here is our own, written in the shape of the real-world files the issue
measured (relative service_conf_dir, YAML text in a .json file, ERB env tags, ...).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nerve.config import load_nerve_config
from smartstack.configfile import ConfigError, load_document
from smartstack.erb import ErbError, render
from synapse.config import DEFAULT_ADMIN_PORT, SynapseConfig, load_synapse_config
from synapse.port_clash import admin_port_clashes

NERVE_SERVICE = {
    "host": "127.0.0.1",
    "port": 8080,
    "zk_hosts": ["127.0.0.1:2181"],
    "zk_path": "/nerve/services/web",
    "checks": [{"type": "tcp"}],
}
HAPROXY = {
    "global": ["daemon"],
    "defaults": ["mode http"],
    "config_file_path": "/tmp/x.cfg",
    "reload_command": "true",
}
ZK_DISCOVERY = {"method": "zookeeper", "hosts": ["127.0.0.1:2181"], "path": "/nerve/web"}


def run(daemon: str, *args: str, cwd: Path, env: dict[str, str] | None = None):
    return subprocess.run(
        [sys.executable, "-m", f"{daemon}.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env={**os.environ, **(env or {})},
    )


# --------------------------------------------------------------------------- item 1


def container_layout(root: Path) -> Path:
    """/smartstack/nerve/nerve.conf.json naming ./smartstack/nerve/nerve_services."""
    folder = root / "smartstack" / "nerve"
    services = folder / "nerve_services"
    services.mkdir(parents=True)
    (services / "web.json").write_text(json.dumps(NERVE_SERVICE))
    (services / "api.yaml").write_text(
        "host: 127.0.0.1\nport: 9090\nzk_hosts: [h:1]\nzk_path: /a\n"
    )
    (services / "old.yml").write_text("host: 127.0.0.1\nport: 9091\nzk_hosts: [h:1]\nzk_path: /o\n")
    (services / "README.md").write_text("not a service")
    (services / "web.json.bak").write_text("{broken")
    config = folder / "nerve.conf.json"
    doc = {"instance_id": "i-1", "service_conf_dir": "./smartstack/nerve/nerve_services"}
    config.write_text(json.dumps({**doc, "services": {}}))
    return config


def test_relative_service_conf_dir_is_relative_to_the_current_directory(tmp_path: Path) -> None:
    container_layout(tmp_path)
    result = run("nerve", "-c", "smartstack/nerve/nerve.conf.json", "-k", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "ok (3 services)" in result.stdout  # web.json, api.yaml, old.yml; nothing else


def test_relative_service_conf_dir_from_another_directory_is_refused(tmp_path: Path) -> None:
    config = container_layout(tmp_path)
    result = run("nerve", "-c", str(config), "-k", cwd=config.parent)
    assert result.returncode == 2
    expected = config.parent / "smartstack" / "nerve" / "nerve_services"
    assert f"service_conf_dir: {expected} is not a directory" in result.stderr


def test_synapse_service_conf_dir_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "conf" / "services").mkdir(parents=True)
    (tmp_path / "conf" / "services" / "web.yaml").write_text(
        json.dumps({"discovery": ZK_DISCOVERY, "haproxy": {"port": 3100}})
    )
    config = tmp_path / "conf" / "synapse.json"
    config.write_text(json.dumps({"haproxy": HAPROXY, "service_conf_dir": "conf/services"}))
    monkeypatch.chdir(tmp_path)
    loaded, _ = load_synapse_config(config)
    assert set(loaded.services) == {"web"}


# --------------------------------------------------------------------------- item 2


def test_label_keys_with_colons_load_in_nerve(tmp_path: Path) -> None:
    labels = {"region:my_region": "uswest1", "superregion:my_superregion": "us", "a b": "c"}
    path = tmp_path / "nerve.json"
    path.write_text(
        json.dumps({"instance_id": "i-1", "services": {"w": {**NERVE_SERVICE, "labels": labels}}})
    )
    config, _ = load_nerve_config(path)
    assert config.services["w"].labels == labels


@pytest.mark.parametrize(
    ("labels", "reason"),
    [({"region\n:x": "a"}, "control character"), ({"k" * 129: "a"}, "longer than 128")],
)
def test_label_keys_with_control_characters_or_absurd_sizes_are_refused(
    tmp_path: Path, labels: dict[str, str], reason: str
) -> None:
    path = tmp_path / "nerve.json"
    path.write_text(
        json.dumps({"instance_id": "i-1", "services": {"w": {**NERVE_SERVICE, "labels": labels}}})
    )
    with pytest.raises(ConfigError, match=reason):
        load_nerve_config(path)


# --------------------------------------------------------------------------- item 5

YAML_IN_A_JSON_FILE = """\
# synapse config, written as YAML although the file is called .json
haproxy:
  global: [daemon]
  defaults: [mode http]
  config_file_path: /tmp/x.cfg
  reload_command: "true"
services:
  web:
    discovery: {method: base}
    haproxy:
      frontend:
        - "acl is_api path_beg \\/api"
      port: 3100
      backend: [ "a",
"""


def test_malformed_yaml_text_reports_the_yaml_parser_position(tmp_path: Path) -> None:
    path = tmp_path / "synapse.conf.json"
    path.write_text(YAML_IN_A_JSON_FILE)
    with pytest.raises(ConfigError) as error:
        load_document(path)
    [line] = error.value.lines
    assert line.startswith(f"{path}:15:1: malformed YAML"), line  # the unclosed flow list


def test_yaml_text_in_a_json_file_that_parses_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "synapse.conf.json"
    path.write_text(YAML_IN_A_JSON_FILE.replace('backend: [ "a",', 'backend: [ "a" ]'))
    assert load_document(path)["services"]["web"]["haproxy"]["port"] == 3100


def test_malformed_json_text_reports_the_json_parser_position(tmp_path: Path) -> None:
    path = tmp_path / "nerve.conf.json"
    path.write_text('# a comment\n{\n  "instance_id": "i-1",\n  "services": {,}\n}\n')
    with pytest.raises(ConfigError) as error:
        load_document(path)
    assert error.value.lines[0].startswith(f"{path}:4:16: malformed JSON"), error.value.lines


# --------------------------------------------------------------------------- ERB


def test_erb_env_forms_are_rendered() -> None:
    text = (
        "a: <%= ENV['ZK_HOST'] %>\n"
        'b: <%= ENV["ZK_HOST"] %>\n'
        "c: <%= ENV.fetch('MISSING', 'fallback') %>\n"
        'd: <%= ENV.fetch("ZK_HOST") %>\n'
    )
    out = render(text, Path("s.yaml"), {"ZK_HOST": "10.0.0.1:2181"})
    assert out == "a: 10.0.0.1:2181\nb: 10.0.0.1:2181\nc: fallback\nd: 10.0.0.1:2181\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: 1\nb: <%= ENV['NOPE'] %>", "s.yaml:2: environment variable NOPE is not set"),
        ("a: <%= ENV.fetch('NOPE') %>", "s.yaml:1: environment variable NOPE is not set"),
        ("a: 1\n\n<% if true %>", "s.yaml:3: unsupported ERB '<% if true %>'"),
        ("a: <%= `hostname` %>", "s.yaml:1: unsupported ERB"),
        ("a: <%= ENV['A'].upcase %>", "s.yaml:1: unsupported ERB"),
        ("a: 1\nb: <%= ENV['A']", "s.yaml:2: ERB tag '<%' is never closed"),
    ],
)
def test_other_erb_is_refused_naming_file_and_line(text: str, message: str) -> None:
    with pytest.raises(ErbError, match="^" + message.replace("[", r"\[").replace("(", r"\(")):
        render(text, Path("s.yaml"), {"A": "x"})


def erb_synapse_file(tmp_path: Path) -> Path:
    path = tmp_path / "synapse.conf.yaml"
    path.write_text(
        "haproxy:\n  global: [daemon]\n  defaults: [mode http]\n"
        "  config_file_path: <%= ENV.fetch('HAPROXY_CFG', '/tmp/haproxy.cfg') %>\n"
        "  reload_command: 'true'\n"
        "services:\n  web:\n    discovery:\n      method: zookeeper\n"
        "      hosts: [\"<%= ENV['ZK_HOST'] %>\"]\n      path: /nerve/web\n"
        "    haproxy:\n      port: 3213\n"  # a listener: `-k` also runs `haproxy -c`
    )
    return path


def test_synapse_renders_erb_in_its_config_file(tmp_path: Path) -> None:
    path = erb_synapse_file(tmp_path)
    result = run("synapse", "-c", str(path), "-k", cwd=tmp_path, env={"ZK_HOST": "127.0.0.1:2181"})
    assert result.returncode == 0, result.stderr
    unset = {k: v for k, v in os.environ.items() if k != "ZK_HOST"}
    bad = subprocess.run(
        [sys.executable, "-m", "synapse.cli", "-c", str(path), "-k"],
        capture_output=True, text=True, timeout=60, env=unset,
    )  # fmt: skip
    assert bad.returncode == 2
    assert f"error: {path}:10: environment variable ZK_HOST is not set" in bad.stderr


def test_nerve_does_not_render_erb(tmp_path: Path) -> None:
    # As Ruby nerve: the text stays as written (here it then fails host validation).
    path = tmp_path / "nerve.yaml"
    service = {**NERVE_SERVICE, "host": "<%= ENV['HOST'] %>"}
    path.write_text(json.dumps({"instance_id": "i-1", "services": {"w": service}}))
    with pytest.raises(ConfigError, match="neither an IP address nor a DNS name"):
        load_nerve_config(path)


def test_synapse_config_environment_variable_names_the_file(tmp_path: Path) -> None:
    path = erb_synapse_file(tmp_path)
    env = {"ZK_HOST": "127.0.0.1:2181", "SYNAPSE_CONFIG": str(path)}
    result = run("synapse", "-k", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert f"{path}: ok (1 services)" in result.stdout
    unset = {k: v for k, v in os.environ.items() if k != "SYNAPSE_CONFIG"}
    missing = subprocess.run(
        [sys.executable, "-m", "synapse.cli", "-k"],
        capture_output=True, text=True, timeout=60, env=unset,
    )  # fmt: skip
    assert missing.returncode == 2
    assert "-c FILE, or $SYNAPSE_CONFIG" in missing.stderr


# --------------------------------------------------------------------------- item 10, config

MINIMUM_SHAPE = """\
services:
  example_service:
    default_servers:
      - {name: default1, host: localhost, port: 8080}
    discovery:
      method: zookeeper
      path: /smartstack/example_service
      hosts: [localhost:2181]
    haproxy:
      port: 3213
      server_options:
        check: true
        inter: 2000
      listen: [mode http]
  list_service:
    discovery: {method: base}
    haproxy:
      server_options: [check, inter 2s]
haproxy:
  reload_command: "true"
  config_file_path: /tmp/haproxy.cfg
  do_writes: false
  do_reloads: false
  global: [daemon]
  defaults: [mode http]
"""


def test_server_options_as_hash_or_list_are_ignored_with_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "minimum.conf.yaml"
    path.write_text(MINIMUM_SHAPE)
    config, warnings = load_synapse_config(path)
    assert config.services["example_service"].haproxy.server_options is None
    assert config.services["list_service"].haproxy.server_options is None
    assert f"{path}: services.example_service.haproxy.server_options: a hash" in warnings[0]
    assert f"{path}: services.list_service.haproxy.server_options: a list" in warnings[1]
    result = run("synapse", "-c", str(path), "-k", cwd=tmp_path)
    assert result.returncode == 0, result.stderr


def test_use_nerve_weights_in_the_top_level_haproxy_block() -> None:
    doc = {
        "haproxy": {**HAPROXY, "use_nerve_weights": True},
        "services": {
            "inherits": {"discovery": ZK_DISCOVERY},
            "opts_out": {"discovery": ZK_DISCOVERY, "haproxy": {"use_nerve_weights": False}},
        },
    }
    config = SynapseConfig.model_validate(doc)
    assert config.services["inherits"].haproxy.use_nerve_weights is True
    assert config.services["opts_out"].haproxy.use_nerve_weights is False
    plain = SynapseConfig.model_validate({**doc, "haproxy": HAPROXY})
    assert plain.services["inherits"].haproxy.use_nerve_weights is False


def test_zookeeper_dns_passes_check(tmp_path: Path) -> None:
    path = tmp_path / "synapse.json"
    discovery = {**ZK_DISCOVERY, "method": "zookeeper_dns", "check_interval": 5}
    web = {"discovery": discovery, "haproxy": {"port": 3213}}
    path.write_text(json.dumps({"haproxy": HAPROXY, "services": {"web": web}}))
    result = run("synapse", "-c", str(path), "-k", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    no_path = {**discovery, "path": None}
    path.write_text(json.dumps({"haproxy": HAPROXY, "services": {"web": {"discovery": no_path}}}))
    result = run("synapse", "-c", str(path), "-k", cwd=tmp_path)
    assert result.returncode == 2
    assert "discovery method zookeeper_dns needs 'path'" in result.stderr


# --------------------------------------------------------------------------- item 8


def synapse(admin: dict | None = None, **haproxy: object) -> SynapseConfig:
    doc: dict = {
        "haproxy": {**HAPROXY, **haproxy},
        "services": {"web": {"discovery": {"method": "base"}, "haproxy": {"port": 3100}}},
    }
    if admin is not None:
        doc["admin"] = admin
    return SynapseConfig.model_validate(doc)


def test_the_default_admin_port_does_not_clash_with_airbnb_stats() -> None:
    config = synapse(extra_sections={"listen stats :3212": ["mode http", "stats enable"]})
    assert config.admin.port == DEFAULT_ADMIN_PORT != 3212
    assert admin_port_clashes(config) == []


@pytest.mark.parametrize(
    ("admin", "haproxy", "where"),
    [
        ({"port": 3212}, {"extra_sections": {"listen stats :3212": []}}, "extra_sections"),
        ({"port": 3212}, {"extra_sections": {"listen stats": ["bind *:3212"]}}, "extra_sections"),
        ({"port": 8404}, {"shared_frontend": ["bind 127.0.0.1:8000-9000"]}, "shared_frontend"),
        ({"port": 3100}, {}, "services.web.haproxy.port"),
        ({"port": 3212, "host": "0.0.0.0"},
         {"extra_sections": {"frontend f": ["bind ipv4@10.1.1.1:3212"]}}, "extra_sections"),
    ],
)  # fmt: skip
def test_admin_port_clashes_are_reported(admin: dict, haproxy: dict, where: str) -> None:
    [line] = admin_port_clashes(synapse(admin, **haproxy))
    assert f"admin.port {admin['port']}" in line and where in line


@pytest.mark.parametrize(
    ("admin", "haproxy"),
    [
        ({"port": 3212}, {"extra_sections": {"listen stats": ["bind 10.1.1.1:3212"]}}),
        ({"port": 3212}, {"extra_sections": {"listen stats": ["bind unix@/tmp/s.sock"]}}),
        ({"port": None}, {"extra_sections": {"listen stats :3212": []}}),
        ({"port": 3213}, {"extra_sections": {"listen stats :3212": []}}),
    ],
)
def test_no_clash_reported_when_they_cannot_meet(admin: dict, haproxy: dict) -> None:
    assert admin_port_clashes(synapse(admin, **haproxy)) == []


def test_check_refuses_a_config_whose_admin_port_clashes(tmp_path: Path) -> None:
    path = tmp_path / "synapse.json"
    doc = {
        "haproxy": {**HAPROXY, "extra_sections": {"listen stats :3212": ["stats enable"]}},
        "services": {"web": {"discovery": ZK_DISCOVERY}},
        "admin": {"port": 3212},
    }
    path.write_text(json.dumps(doc))
    result = run("synapse", "-c", str(path), "-k", cwd=tmp_path)
    assert result.returncode == 2
    assert "admin.port 3212 (on 127.0.0.1) clashes with haproxy.extra_sections" in result.stderr


def test_erb_in_a_service_conf_dir_file_names_that_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    services = tmp_path / "services"
    services.mkdir()
    good = services / "web.yaml"
    good.write_text(
        "discovery:\n  method: zookeeper\n  hosts: [\"<%= ENV['ZK'] %>\"]\n  path: /w\n"
    )
    config = tmp_path / "synapse.yaml"
    config.write_text(json.dumps({"haproxy": HAPROXY, "service_conf_dir": str(services)}))
    monkeypatch.setenv("ZK", "127.0.0.1:2181")
    loaded, _ = load_synapse_config(config)
    assert loaded.services["web"].discovery.hosts == ["127.0.0.1:2181"]
    bad = services / "api.yaml"
    bad.write_text("discovery:\n  method: base\n<% require 'socket' %>\n")
    with pytest.raises(ConfigError) as error:
        load_synapse_config(config)
    assert error.value.lines == [
        f"{bad}:3: unsupported ERB \"<% require 'socket' %>\": only <%= ENV['NAME'] %> and "
        "<%= ENV.fetch('NAME', 'default') %> are rendered"
    ]
