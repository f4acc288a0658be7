"""review s34: config files as Windows and other tools save them. CRLF line ends and a UTF-8
byte order mark load as the same file without them (as Ruby's YAML reads them); a file in
another encoding, or with NUL bytes, is refused with where and what was probably meant
(before: ``FILE: not UTF-8 text``, ``FILE: malformed YAML: unacceptable character #x0000``,
no line)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from nerve.config import load_nerve_config
from smartstack.configfile import ConfigError
from synapse.config import load_synapse_config

NERVE_JSON = """{
  # owner: José
  "instance_id": "host1",
  "services": {"web": {"host": "127.0.0.1", "port": 8080, "zk_hosts": ["127.0.0.1:2181"],
                       "zk_path": "/nerve/services/web", "checks": [{"type": "tcp"}]}}
}
"""
SYNAPSE_YAML = """# owner: José
haproxy: {do_writes: false, do_reloads: false, do_socket: false}
services:
  web:
    discovery: {method: zookeeper, hosts: ["127.0.0.1:2181"], path: /nerve/services/web}
    haproxy: {port: 3301, listen: ["mode http"]}
"""
SAVED_AS = {
    "crlf": lambda text: text.replace("\n", "\r\n").encode(),
    "bom": lambda text: b"\xef\xbb\xbf" + text.encode(),
    "bom+crlf": lambda text: b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode(),
}


@pytest.mark.parametrize("saved_as", sorted(SAVED_AS))
def test_crlf_and_bom_load_as_the_plain_file(tmp_path: Path, saved_as: str) -> None:
    nerve, synapse = tmp_path / "nerve.json", tmp_path / "synapse.yaml"
    nerve.write_bytes(SAVED_AS[saved_as](NERVE_JSON))
    synapse.write_bytes(SAVED_AS[saved_as](SYNAPSE_YAML))
    nerve_config, nerve_warnings = load_nerve_config(nerve)
    assert nerve_warnings == [] and nerve_config.services["web"].port == 8080
    synapse_config, _ = load_synapse_config(synapse)
    web = synapse_config.services["web"].haproxy
    assert web is not None and web.listen == ["mode http"]


def _error(path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load_nerve_config(path)
    (line,) = caught.value.lines
    return line


def test_latin1_says_line_column_byte_and_character(tmp_path: Path) -> None:
    path = tmp_path / "nerve.json"
    path.write_bytes(NERVE_JSON.encode("latin-1"))
    assert _error(path) == (
        f"{path}:2:15: byte 0xe9 is not UTF-8 ('é' in Latin-1/Windows-1252?); "
        "save the file as UTF-8"
    )


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be"])
def test_utf16_is_named(tmp_path: Path, encoding: str) -> None:
    path = tmp_path / "nerve.json"
    path.write_bytes(NERVE_JSON.encode(encoding))
    assert _error(path).startswith(f"{path}: the file is UTF-16 (what Windows PowerShell's >")


def test_nul_bytes_say_where(tmp_path: Path) -> None:
    path = tmp_path / "nerve.yaml"
    path.write_bytes(b"instance_id: host1\nservices:\n" + b"\0" * 64)
    assert _error(path).startswith(f"{path}:3:1: malformed YAML: NUL bytes in the file")


def test_service_file_name_not_utf8_is_refused_at_load(tmp_path: Path) -> None:
    # Before: nerve -k said ok, then the service never started (service_not_started).
    services = tmp_path / "services"
    services.mkdir()
    body = '{"host": "127.0.0.1", "port": 8080, "zk_hosts": ["127.0.0.1:2181"], "zk_path": "/x"}'
    (Path(os.fsdecode(bytes(services) + b"/caf\xe9.json"))).write_text(body, encoding="utf-8")
    path = tmp_path / "nerve.json"
    path.write_text(f'{{"instance_id": "h1", "service_conf_dir": "{services}"}}', encoding="utf-8")
    assert _error(path) == (
        f"{services}: service file name b'caf\\xe9.json' is not UTF-8 (the service is named "
        "after it); rename it"
    )


def test_a_tab_says_what_yaml_wants(tmp_path: Path) -> None:
    path = tmp_path / "nerve.yaml"
    path.write_text("instance_id: h1\nservices:\n  web:\n\thost: 127.0.0.1\n", encoding="utf-8")
    assert _error(path) == (
        f"{path}:4:1: malformed YAML: found character '\\t' that cannot start any token "
        "(YAML takes no tab there: indent with spaces)"
    )


def test_a_tab_indented_json_file_with_a_bom_loads(tmp_path: Path) -> None:
    # Before: JSON refused the BOM, YAML the tabs: "found character '\t' ... indent with spaces".
    path = tmp_path / "nerve.json"
    first, _comment, rest = NERVE_JSON.split("\n", 2)
    text = json.dumps(json.loads(first + "\n" + rest), indent="\t")
    path.write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode())
    config, _ = load_nerve_config(path)
    assert config.services["web"].port == 8080


def test_utf16_without_a_bom_is_named(tmp_path: Path) -> None:
    # Before: ASCII text saved as UTF-16LE decodes as UTF-8: "NUL bytes ... cut short by a crash".
    for name in ("nerve.yaml", "nerve.json"):
        path = tmp_path / name
        path.write_bytes(NERVE_JSON.replace("José", "Jose").encode("utf-16-le"))
        assert _error(path).startswith(f"{path}: the file is UTF-16 without a byte order mark")


def test_a_lone_surrogate_escape_is_refused_with_its_key(tmp_path: Path) -> None:
    # Before: -k ok; the running nerve's kazoo connection thread died on the zk_path, and no
    # service of that ZooKeeper registered (review s34).
    path = tmp_path / "nerve.json"
    path.write_text(NERVE_JSON.replace("/nerve/services/web", "/nerve/caf\\udce9"), "utf-8")
    assert _error(path) == (
        f"{path}: services.web.zk_path: '/nerve/caf\\udce9' holds a lone UTF-16 surrogate (an "
        "escape such as \\udce9, what Python makes of a byte that is not UTF-8), which no file "
        "or registry path can hold; write the character itself"
    )


def test_a_surrogate_pair_escape_in_yaml_is_one_character(tmp_path: Path) -> None:
    # PyYAML reads "\ud83d\ude00" as two lone surrogates (JSON joins them): synapse -k ended
    # in a UnicodeEncodeError traceback writing the HAProxy file.
    path = tmp_path / "synapse.yaml"
    pair = '"http-request set-header X \\ud83d\\ude00"'
    path.write_text(SYNAPSE_YAML.replace('"mode http"', pair), encoding="utf-8")
    config, _ = load_synapse_config(path)
    assert config.services["web"].haproxy.listen == ["http-request set-header X \U0001f600"]
