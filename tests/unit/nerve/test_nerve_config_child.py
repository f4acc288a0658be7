"""nerve's validating child (nerve.config_child), called directly: what it answers."""

from __future__ import annotations

import json
from pathlib import Path

from nerve.config_child import child_command, validate_file

SERVICE = {"host": "127.0.0.1", "port": 8080, "zk_hosts": ["127.0.0.1:2181"], "zk_path": "/x",
           "checks": [{"type": "tcp"}]}  # fmt: skip


def write(tmp_path: Path, config: dict) -> str:
    path = tmp_path / "nerve.json"
    path.write_text(json.dumps(config))
    return str(path)


def test_a_valid_file_is_answered_plain_unless_in_docker_mode(tmp_path: Path) -> None:
    answer = validate_file(write(tmp_path, {"instance_id": "h1", "services": {"web": SERVICE}}),
                           None, False)  # fmt: skip
    assert answer["ok"] and answer["plain"] and list(answer["config"].services) == ["web"]
    docker = {"instance_id": "h1", "docker": {"service_defaults": {"zk_hosts": ["z:1"],
                                                                  "zk_path": "/s"}}}  # fmt: skip
    answer = validate_file(write(tmp_path, docker), "h2", False)
    assert answer["ok"] and not answer["plain"]  # container labels are validated at runtime
    assert answer["config"].instance_id == "h2"  # (-i wins over the file)


def test_a_bad_file_is_answered_with_the_lines_nerve_k_prints(tmp_path: Path) -> None:
    path = write(tmp_path, {"instance_id": "h1", "services": {"web": {**SERVICE, "port": "x"}}})
    answer = validate_file(path, None, False)
    assert not answer["ok"]
    assert any(path in line and "services.web.port" in line for line in answer["lines"])


def test_the_sighup_child_command_carries_the_flags() -> None:
    command = child_command("/etc/nerve.yaml", "h1", True, 7)
    assert command[1:] == ["-P", "-m", "nerve.config_child", "/etc/nerve.yaml", "--answer-fd",
                           "7", "--instance-id", "h1", "--strict"]  # fmt: skip
