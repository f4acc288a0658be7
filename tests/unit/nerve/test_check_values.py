"""HTTP check values that can never be sent and a zk_path kazoo refuses are load errors
naming the key (they passed -k and never registered); shell commands are left to the shell."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from nerve.config import load_nerve_config
from smartstack.configfile import ConfigError

CHECK = {"type": "http", "uri": "/health"}


def load(tmp_path: Path, check: dict[str, Any] | None = None, **service: Any) -> str:
    block = {"host": "127.0.0.1", "port": 8080, "zk_hosts": ["127.0.0.1:2181"]}
    block |= {"zk_path": "/nerve/web", "checks": [check or CHECK], **service}
    path = tmp_path / "nerve.yaml"
    doc = {"instance_id": "host1", "services": {"web": block}}
    path.write_text(yaml.safe_dump(doc, allow_unicode=True))
    with pytest.raises(ConfigError) as caught:
        load_nerve_config(path)
    assert str(path) in str(caught.value)
    return str(caught.value)


@pytest.mark.parametrize(
    ("uri", "meant"),
    [("/he alth", "/he%20alth"), ("/héalth", "/h%C3%A9alth"), ("/health\r\n", "/health%0D%0A")],
)
def test_a_uri_that_is_no_request_target_is_refused(tmp_path: Path, uri: str, meant: str) -> None:
    text = load(tmp_path, {**CHECK, "uri": uri})
    assert "services.web.checks[0].uri" in text and f"percent-encoded {meant!r}" in text


@pytest.mark.parametrize(
    ("headers", "says"),
    [
        ({"Host": "a\r\nX: y"}, "without line breaks"),
        ({"Host": "bücher"}, "IDNA form 'xn--bcher-kva'"),
        ({"X Trace": "1"}, "not an HTTP token"),
        ({"Host": "a.example "}, "did you mean 'a.example'"),
    ],
)
def test_headers_that_cannot_be_sent_are_refused(
    tmp_path: Path, headers: dict[str, str], says: str
) -> None:
    text = load(tmp_path, {**CHECK, "headers": headers})
    assert "services.web.checks[0].headers" in text and says in text


def test_a_check_host_with_whitespace_is_refused(tmp_path: Path) -> None:
    text = load(tmp_path, {**CHECK, "host": "127.0.0.1 "})
    assert "checks[0].host" in text and "did you mean '127.0.0.1'" in text


@pytest.mark.parametrize(
    "command",
    [
        "cat <<EOF | grep -q ok\nit's ok\nEOF",  # a heredoc: /bin/sh runs it, shlex cannot
        'test "$(printf "%s" "it\'s up")" = "it\'s up"',  # quotes nested in $()
    ],
)
def test_a_shell_command_is_left_to_the_shell(tmp_path: Path, command: str) -> None:
    """Review s31: shlex refused these (nerve did not start); /bin/sh runs them."""
    block = {"host": "127.0.0.1", "port": 8080, "zk_hosts": ["127.0.0.1:2181"], "zk_path": "/x"}
    block["checks"] = [{"type": "exec", "command": command}]
    path = tmp_path / "nerve.yaml"
    path.write_text(yaml.safe_dump({"instance_id": "host1", "services": {"web": block}}))
    config, _ = load_nerve_config(path)
    assert config.services["web"].checks[0].command == command


@pytest.mark.parametrize(("zk_path", "meant"), [("/nerve/./web", "/nerve/web"), (" /a", "/a")])
def test_a_zk_path_with_dot_components_or_spaces_is_refused(
    tmp_path: Path, zk_path: str, meant: str
) -> None:
    text = load(tmp_path, zk_path=zk_path)
    assert "services.web.zk_path" in text and f"did you mean {meant!r}" in text


def test_values_that_work_stay_accepted(tmp_path: Path) -> None:
    block = {"host": "127.0.0.1", "port": 8080, "zk_hosts": ["127.0.0.1:2181"]}
    checks = [
        {
            **CHECK,
            "uri": "/health?x=1%202&y=[a]",
            "headers": {"Host": "a.example", "X-N": 3, "X-E": "", "X-T": "a\tb"},
        },
        {"type": "http", "uri": "http://127.0.0.1:8080/health", "host": "::1"},
        {"type": "exec", "command": "test \"a b\" = 'a b' # it's fine"},
        {"type": "exec", "command": ["/bin/true", "'"]},
    ]
    block |= {"zk_path": "/nerve//web/", "checks": checks}
    path = tmp_path / "nerve.yaml"
    path.write_text(yaml.safe_dump({"instance_id": "h", "services": {"web": block}}))
    config, _ = load_nerve_config(path)
    assert config.services["web"].zk_path == "/nerve//web"
