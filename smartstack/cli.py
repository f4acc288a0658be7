"""Command-line plumbing shared by ``nerve`` and ``synapse``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from smartstack import logs
from smartstack.configfile import ConfigError

EXIT_CONFIG_ERROR = 2


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", required=True, help="config file (JSON or YAML)")
    parser.add_argument(
        "-k", "--check-config", action="store_true", help="validate the config and exit"
    )
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    parser.add_argument("--log-format", default="kv", choices=["kv", "json"])


def fail(lines: list[str]) -> NoReturn:
    for line in lines:
        print(f"error: {line}", file=sys.stderr)
    sys.exit(EXIT_CONFIG_ERROR)


def load_or_exit(loader: Callable[[], tuple[Any, list[str]]]) -> Any:
    """Load a config, print warnings, exit 2 with one line per error (no traceback)."""
    try:
        config, warnings = loader()
    except ConfigError as exc:
        fail(exc.lines)
    for line in warnings:
        print(f"warning: {line}", file=sys.stderr)
    return config


def start_logging(args: argparse.Namespace) -> None:
    logs.setup(args.log_level, args.log_format)
