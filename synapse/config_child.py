"""Validating synapse's config in a short-lived process, for a daemon on plain models.

pydantic (~9 MB of RSS with its schemas) is needed to validate a config, not to run one.
So the daemon (``synapse.config_load``) has a child validate: at start a fork taken before
any thread exists, on SIGHUP ``python -m synapse.config_child`` (a fork of a running
daemon with threads is not safe). The child loads the file exactly as ``synapse -k``
does (same errors: file, key, expectation, "did you mean") and answers one JSON object:

- ``{"ok": true, "tree": <smartstack.model_tree tree>, "warnings": [...], "plain": bool}``;
  ``plain`` is false when the daemon must validate at runtime itself (``docker_services``:
  container labels become services), so it stays on pydantic;
- ``{"ok": false, "lines": [...]}``: the ConfigError's lines;
- ``{"ok": false, "crash": "..."}``: the child failed otherwise (a bug), with its traceback.

``--service``: validate one service block read from stdin (a registry's generator settings
merged under a service, ``synapse.generator_config``); the error is pydantic's message.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import traceback
from typing import Any

CHILD_TIMEOUT = 120.0  # a 1,000-service config validates in well under a second


def validate_file(path: str, zone: str | None, strict: bool) -> dict[str, Any]:
    """The answer for the config file at ``path`` (see the module docstring)."""
    from smartstack.config_share import _SHARED
    from smartstack.configfile import ConfigError
    from smartstack.model_tree import emit
    from synapse.config import load_synapse_config

    try:
        config, warnings = load_synapse_config(path, zone, strict)
    except ConfigError as exc:
        return {"ok": False, "lines": exc.lines}
    docker = config.docker_services
    plain = not (docker is not None and docker.enabled)
    shared = {cls: model for cls, model in _SHARED.items() if model is not None}
    return {"ok": True, "tree": emit(config, shared), "warnings": warnings, "plain": plain}


def validate_service(doc: Any) -> dict[str, Any]:
    from pydantic import ValidationError

    from smartstack.config_share import _SHARED
    from smartstack.model_tree import emit
    from synapse.config import ServiceConfig

    try:
        service = ServiceConfig.model_validate(doc)
    except ValidationError as exc:
        return {"ok": False, "error": str(exc)}
    shared = {cls: model for cls, model in _SHARED.items() if model is not None}
    return {"ok": True, "tree": emit(service, shared)}


def _guarded(answer: Any) -> dict[str, Any]:
    try:
        return answer()
    except BaseException:  # reported to the daemon, which logs it and keeps running
        return {"ok": False, "crash": traceback.format_exc()[-2000:]}


class ForkedValidation:
    """Validation in a forked child (start it before any thread exists): this process never
    imports pydantic; the child does, answers through a pipe and exits. This process may
    do other work meanwhile (import what it needs next) and then take the ``answer()``."""

    def __init__(self, path: str, zone: str | None, strict: bool) -> None:
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child
            code = 0
            try:
                os.close(read_end)
                data = json.dumps(_guarded(lambda: validate_file(path, zone, strict))).encode()
                with os.fdopen(write_end, "wb") as out:
                    out.write(data)
            except BaseException:
                code = 1
            finally:
                os._exit(code)  # no atexit handlers, no flushing of the parent's buffers
        os.close(write_end)
        self.pid, self.read_end = pid, read_end

    def answer(self) -> dict[str, Any]:
        with os.fdopen(self.read_end, "rb") as pipe:
            data = pipe.read()
        _, status = os.waitpid(self.pid, 0)
        if not data:
            return {
                "ok": False,
                "crash": f"the validating child ended without an answer ({status})",
            }
        return json.loads(data)


def child_command(path: str, zone: str | None, strict: bool) -> list[str]:
    """The command of a validating child for ``path`` (SIGHUP)."""
    command = [sys.executable, "-m", "synapse.config_child", path]
    return command + (["--zone", zone] if zone else []) + (["--strict"] if strict else [])


def service_from_child(doc: dict[str, Any]) -> Any:
    """A service block validated by a child, as a plain ServiceConfig; invalid: raises
    ``smartstack.modelbase.ValidationError`` with pydantic's message."""
    from smartstack.model_tree import Rebuilder
    from smartstack.modelbase import ValidationError

    command = [sys.executable, "-m", "synapse.config_child", "--service"]
    done = subprocess.run(
        command, input=json.dumps(doc).encode(), capture_output=True, timeout=CHILD_TIMEOUT
    )
    try:
        answer = json.loads(done.stdout)
    except ValueError:
        answer = {"ok": False, "error": done.stderr.decode(errors="replace")[-500:]}
    if not answer.get("ok"):
        raise ValidationError(answer.get("error") or answer.get("crash") or "failed")
    return Rebuilder().build(answer["tree"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m synapse.config_child")
    parser.add_argument("path", nargs="?")
    parser.add_argument("--zone")
    parser.add_argument("--strict", action="store_true")
    parser.add_argument("--service", action="store_true", help="one service block on stdin")
    args = parser.parse_args(argv)
    if args.service:
        doc = json.loads(sys.stdin.buffer.read())
        answer = _guarded(lambda: validate_service(doc))
    else:
        answer = _guarded(lambda: validate_file(args.path, args.zone, args.strict))
    sys.stdout.write(json.dumps(answer))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
