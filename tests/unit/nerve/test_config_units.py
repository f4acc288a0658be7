"""Times that look like milliseconds where nerve means seconds: a warning, never a refusal."""

from __future__ import annotations

from pathlib import Path

import yaml

from nerve.config import load_nerve_config


def _load(tmp_path: Path, service: dict, docker: bool = False) -> list[str]:
    base = {"host": "127.0.0.1", "port": 8080, "zk_hosts": ["127.0.0.1:2181"], "zk_path": "/w"}
    if docker:
        doc = {"instance_id": "a", "docker": {"service_defaults": {**base, **service}}}
    else:
        doc = {"instance_id": "a", "services": {"web": {**base, **service}}}
    path = tmp_path / "nerve.yaml"
    path.write_text(yaml.safe_dump(doc))
    return load_nerve_config(path)[1]


def test_milliseconds_written_as_seconds_are_said_with_what_was_meant(tmp_path: Path) -> None:
    warnings = _load(
        tmp_path, {"check_interval": 500, "checks": [{"type": "tcp", "timeout": 2000}]}
    )
    assert warnings == [
        f"{tmp_path}/nerve.yaml: services.web.check_interval: 500 s (8.3 minutes); values are "
        "seconds: if 500 milliseconds were meant, write 0.5",
        f"{tmp_path}/nerve.yaml: services.web.checks[0].timeout: 2000 s (33.3 minutes); values "
        "are seconds: if 2000 milliseconds were meant, write 2",
    ]


def test_a_lease_or_session_in_milliseconds(tmp_path: Path) -> None:
    etcd = {"reporter_type": "etcd", "etcd_endpoints": ["127.0.0.1:2379"], "etcd_lease_ttl": 5000}
    assert ["etcd_lease_ttl: 5000 s (1.4 hours)" in w for w in _load(tmp_path, etcd)] == [True]
    session = {"zk_session_timeout": 10000}
    assert ["zk_session_timeout: 10000 s" in w for w in _load(tmp_path, session)] == [True]


def test_an_interval_checking_a_thousand_times_a_second(tmp_path: Path) -> None:
    (warning,) = _load(tmp_path, {"check_interval": 0.001}, docker=True)
    assert "docker.service_defaults.check_interval: 0.001 s runs the checks ~1,000 times" in warning


def test_usual_values_say_nothing(tmp_path: Path) -> None:
    usual = {"check_interval": 0.05, "checks": [{"type": "exec", "command": "true", "timeout": 60}]}
    assert _load(tmp_path, {**usual, "zk_session_timeout": 30}) == []
    assert _load(tmp_path, {"check_interval": 99.9}) == []
    slow_exec = {"checks": [{"type": "exec", "command": "true", "timeout": 120}]}
    assert _load(tmp_path, {"check_interval": 120, **slow_exec}) == []  # (review s32)


def test_a_service_file_is_named_as_its_own(tmp_path: Path) -> None:
    """Review s32: a service_conf_dir service's warning named the main file."""
    conf = tmp_path / "conf.d"
    conf.mkdir()
    block = {"host": "127.0.0.1", "port": 80, "zk_hosts": ["127.0.0.1:2181"], "zk_path": "/w"}
    (conf / "web.yaml").write_text(yaml.safe_dump({**block, "check_interval": 500}))
    path = tmp_path / "nerve.yaml"
    path.write_text(yaml.safe_dump({"instance_id": "a", "service_conf_dir": str(conf)}))
    (warning,) = load_nerve_config(path)[1]
    assert warning.startswith(f"{conf}/web.yaml: services.web.check_interval: 500 s")
