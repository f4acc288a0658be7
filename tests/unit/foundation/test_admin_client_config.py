"""`nerve maint|up -c FILE` and `synapse zone ... -c FILE` read only the file's ``admin``
block: a daemon started with `-i` (no ``instance_id`` in the file) or a file mid-edit must
not keep `nerve up` from ending a maintenance. A file that cannot be read or parsed, or an
``admin`` block that is wrong, is still a clear error (exit 2)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from nerve import control
from smartstack import admin_client
from synapse import zone_cli

WITHDRAWN = {"service": "web", "wanted": False, "registered": False,
             "maintenance": {"reason": "x", "until": None}}  # fmt: skip


def _calls(monkeypatch: pytest.MonkeyPatch, module: Any, answer: Any) -> list[tuple[str, str]]:
    calls: list[tuple[str, str]] = []

    def call(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        calls.append((method, url))
        return answer

    monkeypatch.setattr(module, "call", call)
    return calls


def _nerve(monkeypatch: pytest.MonkeyPatch, path: Path, *argv: str) -> tuple[int, list]:
    calls = _calls(monkeypatch, control, WITHDRAWN)
    return control.main([*argv, "web", *(["--reason", "x"] if argv[0] == "maint" else []),
                         "-c", str(path)]), calls  # fmt: skip


@pytest.mark.parametrize(
    "document",
    [
        # started with `nerve -c FILE -i host-42`: no instance_id in the file
        {"admin": {"port": 4242}, "services": {"web": {"host": "127.0.0.1", "port": 80}}},
        # mid-edit: a typo the running nerve never loaded
        {"instance_id": "h", "admin": {"port": 4242}, "services": {"web": {"chekcs": []}}},
        {"instance_id": "h", "admin": {"port": 4242, "port_typo": 1}, "services": "todo"},
    ],
)
@pytest.mark.parametrize("command", ["maint", "up"])
def test_only_the_admin_block_is_read(monkeypatch, tmp_path: Path, document, command) -> None:
    path = tmp_path / "nerve.json"
    path.write_text(json.dumps(document))
    code, calls = _nerve(monkeypatch, path, command)
    assert code == 0
    method = "POST" if command == "maint" else "DELETE"
    assert calls == [(method, "http://127.0.0.1:4242/maintenance/web")]


def test_the_daemons_own_defaults_apply(monkeypatch, tmp_path: Path) -> None:
    path = tmp_path / "nerve.yaml"
    path.write_text("services: {}\n")  # no admin block: nerve's default port
    assert _nerve(monkeypatch, path, "up")[1] == [
        ("DELETE", "http://127.0.0.1:1025/maintenance/web")
    ]


@pytest.mark.parametrize(
    "text, error",
    [
        (None, "nerve.json: cannot read"),
        ('{"admin": {"port": 4242', "nerve.json:1:24: malformed JSON"),
        ('{"admin": {"port": "many"}}', "nerve.json: admin.port: Input should be a valid integer"),
        ('{"admin": [4242]}', "nerve.json: admin: expected a mapping"),
    ],
)
def test_a_file_that_cannot_tell_the_admin_address_is_a_clear_error(
    monkeypatch, capsys, tmp_path: Path, text: str | None, error: str
) -> None:
    path = tmp_path / "nerve.json"
    if text is not None:
        path.write_text(text)
    with pytest.raises(SystemExit) as exited:
        _nerve(monkeypatch, path, "up")
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and error in err and "Traceback" not in err


def test_a_disabled_admin_api_is_said_so(monkeypatch, capsys, tmp_path: Path) -> None:
    path = tmp_path / "nerve.json"
    path.write_text('{"admin": {"port": null}}')
    with pytest.raises(SystemExit) as exited:
        _nerve(monkeypatch, path, "up")
    assert exited.value.code == admin_client.EXIT_FAILED
    assert "the admin API is disabled" in capsys.readouterr().err


def test_a_picked_admin_port_asks_for_the_url(monkeypatch, capsys, tmp_path: Path) -> None:
    # `admin.port: 0` (a free port picked at start): before, the call went to port 0 and said
    # only "cannot reach ... http://127.0.0.1:0/...: Connection refused" (review s44 newuser).
    path = tmp_path / "nerve.json"
    path.write_text('{"admin": {"port": 0}}')
    calls = _calls(monkeypatch, control, WITHDRAWN)
    with pytest.raises(SystemExit) as exited:
        control.main(["up", "web", "-c", str(path)])
    assert exited.value.code == admin_client.EXIT_FAILED
    assert calls == []
    err = capsys.readouterr().err
    assert "admin.port is 0" in err and "admin_listening" in err and "--admin" in err


def test_synapse_zone_reads_the_admin_block_with_erb_and_its_own_default(
    monkeypatch, tmp_path: Path
) -> None:
    calls = _calls(monkeypatch, zone_cli, {"ok": True})
    monkeypatch.setenv("ZONE_ADMIN_PORT", "4343")
    path = tmp_path / "synapse.yaml"
    # no services (synapse itself refuses that file), the port from the environment (ERB)
    path.write_text("admin:\n  port: <%= ENV['ZONE_ADMIN_PORT'] %>\n")
    assert zone_cli.main(["zone", "evacuate", "az1", "-c", str(path)]) == 0
    path.write_text("services: {}\n")  # no admin block: synapse's default port
    assert zone_cli.main(["zone", "restore", "az1", "-c", str(path)]) == 0
    assert calls == [("POST", "http://127.0.0.1:4343/zones/az1/evacuate"),
                     ("POST", "http://127.0.0.1:1026/zones/az1/restore")]  # fmt: skip
