"""Validating nerve's config in a short-lived process, for a daemon on plain models.

The daemon (``nerve.config_load``) has a child validate (``smartstack.config_child``: why,
and how the answer travels): at start a fork, on SIGHUP ``python -P -m nerve.config_child
PATH --answer-fd N [--instance-id ID] [--strict]`` (``--fallback``: a start's, spawned).
The child loads the file exactly as ``nerve -k`` does (same errors). Its answer when the
file is valid: ``{"ok": True, "config": NerveConfig, "warnings": [...], "plain": bool,
"document": dict | None, "last_good": dict | None}`` (nerve.last_good); ``plain`` is false
in Docker mode (``docker``: container labels become services, validated at runtime), where
the daemon stays on pydantic.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from smartstack import config_child
from smartstack.config_child import NO_PLUGINS, pickled, write_answer

# -P: this checkout's code, not a nerve/ in the daemon's current directory.
CHILD_PYTHON = (sys.executable, "-P", "-m", "nerve.config_child")


def validate_file(
    path: str, instance_id: str | None, strict: bool, fallback: bool = False
) -> dict[str, Any]:
    """The answer; ``fallback`` (a start): the last good copy when the file is refused, and
    a valid file's merged document to keep as the next copy (nerve.last_good)."""
    from nerve.last_good import validated

    return validated(path, instance_id, strict, fallback)


class ForkedValidation(config_child.ForkedValidation):
    """The config file at ``path`` validated in a forked child (before any thread exists)."""

    daemon = "nerve"

    def __init__(
        self, path: str, instance_id: str | None, strict: bool, fallback: bool = False
    ) -> None:
        super().__init__(
            lambda: validate_file(path, instance_id, strict, fallback),
            lambda fd: child_command(path, instance_id, strict, fd) + ["--fallback"] * fallback,
        )


def child_command(path: str, instance_id: str | None, strict: bool, answer_fd: int) -> list[str]:
    """The command of a validating child for ``path`` (SIGHUP), answering on ``answer_fd``."""
    command = [*CHILD_PYTHON, path, "--answer-fd", str(answer_fd)]
    command += ["--instance-id", instance_id] if instance_id else []
    return command + (["--strict"] if strict else [])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nerve.config_child")
    parser.add_argument("path")
    parser.add_argument("--instance-id")
    parser.add_argument("--strict", action="store_true")
    parser.add_argument("--answer-fd", type=int, help="the pipe to answer on (else stdout)")
    parser.add_argument("--fallback", action="store_true", help="a start: the last good copy")
    args = parser.parse_args(argv)
    os.environ[NO_PLUGINS] = "1"
    answer = pickled(lambda: validate_file(args.path, args.instance_id, args.strict,
                                           args.fallback))  # fmt: skip
    write_answer(answer, args.answer_fd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
