"""The daemons' `-k` CLI: Airbnb files pass unchanged; mistakes fail in one line naming the key."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = ROOT / "examples" / "airbnb"


def run_cli(
    daemon: str, config: Path, *extra: str, cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    # cwd matters: a relative service_conf_dir is relative to it (the examples: the repo root)
    return subprocess.run(
        [sys.executable, "-m", f"{daemon}.cli", "-c", str(config), "-k", *extra],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )


@pytest.mark.parametrize(
    ("daemon", "name"),
    [
        ("nerve", "nerve.conf.json"),
        ("synapse", "synapse.conf.json"),
        ("synapse", "synapse.legacy.yaml"),
    ],
)
def test_airbnb_files_pass_check_unchanged(daemon: str, name: str) -> None:
    # --config-only: the files name paths of Airbnb's hosts (and HAProxy 1.x syntax).
    result = run_cli(daemon, EXAMPLES / name, "--config-only")
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout
    assert "Traceback" not in result.stderr


def write(tmp_path: Path, name: str, content: object) -> Path:
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


NERVE_SERVICE = {"host": "10.0.0.1", "port": 80, "zk_hosts": ["h:2181"], "zk_path": "/s"}


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ({"services": {}}, "instance_id: required key is missing"),
        (
            {"instance_id": "a", "services": {"web": {**NERVE_SERVICE, "port": "eighty"}}},
            "services.web.port: ",
        ),
        (
            {
                "instance_id": "a",
                "services": {"web": {**NERVE_SERVICE, "checks": [{"type": "tcp", "timeout": "x"}]}},
            },
            "services.web.checks[0].timeout: Input should be a valid number",
        ),
        (
            {
                "instance_id": "a",
                "services": {"web": {**NERVE_SERVICE, "checks": [{"type": "http"}]}},
            },
            "services.web.checks[0]: a http check needs 'uri'",
        ),
        (
            {"instance_id": "a", "services": {"web": {"host": "h", "port": 1, "zk_path": "/x"}}},
            "services.web: reporter_type zookeeper needs 'zk_hosts'",
        ),
        (
            {"instance_id": "a", "services": {"web": {**NERVE_SERVICE, "reporter_type": "serf"}}},
            "services.web.reporter_type: Input should be 'zookeeper' or 'etcd'",
        ),
    ],
)
def test_nerve_errors_name_the_file_and_key(tmp_path: Path, doc: dict, expected: str) -> None:
    path = write(tmp_path, "nerve.json", doc)
    result = run_cli("nerve", path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"error: {path}: {expected}" in result.stderr, result.stderr


def test_errors_in_service_conf_dir_name_that_file(tmp_path: Path) -> None:
    (tmp_path / "svc").mkdir()
    bad = write(tmp_path / "svc", "api.json", {**NERVE_SERVICE, "check_interval": -1})
    path = write(tmp_path, "nerve.json", {"instance_id": "a", "service_conf_dir": "svc"})
    result = run_cli("nerve", path, cwd=tmp_path)
    assert result.returncode == 2
    assert f"error: {bad}: services.api.check_interval: Input should be greater than 0" in (
        result.stderr
    )


SYNAPSE_BASE = {
    "haproxy": {
        "config_file_path": "/tmp/x.cfg",
        "reload_command": "true",
        "global": [],
        "defaults": [],
    }
}


@pytest.mark.parametrize(
    ("services", "expected"),
    [
        ({"web": {}}, "services.web.discovery: required key is missing"),
        ({"web": {"discovery": {"method": "zookeeper", "path": "/x"}}}, "needs 'hosts'"),
        ({"web": {"discovery": {"method": "carrier-pigeon"}}}, "services.web.discovery.method"),
        (
            {"web": {"discovery": {"method": "base"}, "haproxy": {"port": 99999}}},
            "services.web.haproxy.port: Input should be less than or equal to 65535",
        ),
        (
            {"web": {"discovery": {"method": "base"}, "haproxy": {"backend_order": "random"}}},
            "services.web.haproxy.backend_order",
        ),
    ],
)
def test_synapse_errors_name_the_file_and_key(
    tmp_path: Path, services: dict, expected: str
) -> None:
    path = write(tmp_path, "synapse.json", {**SYNAPSE_BASE, "services": services})
    result = run_cli("synapse", path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"error: {path}: " in result.stderr
    assert expected in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("bad.json", '{"instance_id": "a",\n  "services": {,}}', "bad.json:2:16: malformed JSON"),
        ("bad.yaml", "instance_id: a\nservices: [unclosed\n", "bad.yaml:3:1: malformed YAML"),
        ("list.yaml", "- a\n- b\n", "expected a mapping at the top level, got a list"),
    ],
)
def test_malformed_files_fail_with_one_line(
    tmp_path: Path, name: str, text: str, expected: str
) -> None:
    path = write(tmp_path, name, text)
    result = run_cli("nerve", path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert expected in lines[0]


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    result = run_cli("synapse", tmp_path / "nope.yaml")
    assert result.returncode == 2
    assert "cannot read" in result.stderr
