"""Command-line plumbing shared by ``nerve`` and ``synapse``."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, Protocol

from smartstack import logs, prometheus_lean
from smartstack.configfile import ConfigError
from smartstack.early_signals import hold_sighup, release_sighup

EXIT_CONFIG_ERROR = 2


def add_common_arguments(parser: argparse.ArgumentParser, config_env: str | None = None) -> None:
    """``config_env``: an environment variable that names the config file when -c is absent."""
    parser.add_argument("--version", action=_Version, help="show the version and exit")
    if config_env:
        parser.add_argument(
            "-c",
            "--config",
            default=os.environ.get(config_env) or None,
            help=f"config file (JSON or YAML); default: ${config_env}",
        )
    else:
        parser.add_argument("-c", "--config", required=True, help="config file (JSON or YAML)")
    parser.add_argument(
        "-k", "--check-config", action="store_true", help="validate the config and exit"
    )
    parser.add_argument(
        "--strict", action="store_true", help="every unknown key is an error, not a warning"
    )
    parser.add_argument(
        "--config-only",
        action="store_true",
        help="with -k: check the file only, not this host (paths, haproxy -c)",
    )
    parser.add_argument(
        "--no-last-good",
        action="store_true",
        help="an invalid config at start exits 2 instead of running the last good copy "
        "(smartstack/last_good.py)",
    )
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    parser.add_argument("--log-format", default="kv", choices=["kv", "json"])


class _Version(argparse.Action):
    """``--version``: one line, never wrapped (argparse's own action wraps long text)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> None:
        from smartstack.build_info import version_line

        print(version_line(parser.prog))
        parser.exit()


def say(line: str) -> None:
    """A line for the operator on stderr: through the daemon's log writer once it runs (a
    stuck stderr must not stall a start: log_writer.py), else printed."""
    writer = logs.writer()
    if writer is None:
        print(line, file=sys.stderr)
    else:
        writer.say(line)


def fail(lines: list[str]) -> NoReturn:
    for line in lines:
        say(f"error: {line}")
    sys.exit(EXIT_CONFIG_ERROR)


def load_or_exit(loader: Callable[[], tuple[Any, list[str]]]) -> Any:
    """Load a config, print warnings, exit 2 with one line per error (no traceback)."""
    try:
        config, warnings = loader()
    except ConfigError as exc:
        fail(exc.lines)
    for line in warnings:
        say(f"warning: {line}")
    return config


def hold_std_fds() -> None:
    """fd 0, 1 or 2 closed at start (a careless daemonizer): /dev/null takes the number, so
    that no socket opened later gets it (what is written to stderr would go into it)."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)


def start_logging(args: argparse.Namespace) -> None:
    logs.setup(args.log_level, args.log_format)


class _Config(Protocol):
    services: dict[str, Any]


# (config, its path, check the whole host?) -> (error lines, notes): what the file alone
# cannot tell
Preflight = Callable[[Any, Path, bool], tuple[list[str], list[str]]]


def check_or_run(
    args: argparse.Namespace,
    loader: Callable[[], tuple[_Config, list[str]]],
    run: Callable[[Any, argparse.Namespace], int],
    preflight: Preflight | None = None,
) -> int:
    """Load the config; with -k report and exit 0, otherwise start logging and run the daemon.

    ``preflight`` checks this host: at start the paths the daemon writes, with -k also
    slower checks (``haproxy -c``); ``--config-only`` skips it for -k (CI machines). At a
    start, logging is set up first: what the preflight lets through it logs as events.
    """
    # (held since the first line of nerve.cli / synapse.cli: smartstack.early_signals)
    release_sighup() if args.check_config else hold_sighup()
    if not args.check_config:  # first: what a start says then must not block on stderr
        hold_std_fds()
        start_logging(args)
    config = load_or_exit(loader)
    if preflight is not None and not (args.check_config and args.config_only):
        errors, notes = preflight(config, Path(args.config), args.check_config)
        for line in notes:
            say(f"note: {line}")
        if errors:
            fail(errors)
    if args.check_config:
        print(f"{args.config}: ok ({len(config.services)} services)")
        return 0
    return run(config, args)


def imported(ref: str) -> Any:
    """``"package.module:name"``, imported now: the CLIs import what a path needs only on
    that path (``-k`` none of the daemon's modules; which base the config models get is
    decided after the arguments are read: nerve/synapse ``config_load``)."""
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


def run_command(argv: list[str], names: tuple[str, ...], entry: str) -> int | None:
    """A control command (``nerve maint``, ``synapse zone``): its ``entry`` runs it and the
    status is returned; None when ``argv`` is no such command (the daemon's own line)."""
    if not argv or argv[0] not in names:
        return None
    release_sighup()  # a command, not the daemon
    return int(imported(entry)(argv))


def check_or_start(
    args: argparse.Namespace,
    daemon: str,
    override: str | None,
    run: Callable[[Any, argparse.Namespace, Any], int],
) -> int:
    """``check_or_run`` for ``daemon`` (the package: ``nerve`` or ``synapse``). With ``-k``
    the config is validated here, on pydantic (``<daemon>.config.load_<daemon>_config``); a
    start has plain config objects, validated by a child (``<daemon>.config_load``'s
    ``ConfigSource``), which ``run(config, args, source)`` gets. ``override``: ``-i``
    (nerve's instance_id) or ``--zone`` (synapse). The host checks: ``<daemon>.preflight``.
    """

    def preflight(config: Any, path: Path, full: bool) -> tuple[list[str], list[str]]:
        return imported(f"{daemon}.preflight:preflight")(config, path, full)  # (model base set)

    if args.check_config:
        load = imported(f"{daemon}.config:load_{daemon}_config")
        loader = lambda: load(args.config, override, args.strict)  # noqa: E731
        return check_or_run(args, loader, lambda config, args: 0, preflight)
    prometheus_lean.install()  # before the daemon's modules: ~4 MB it never uses
    source = imported(f"{daemon}.config_load:ConfigSource")
    found = source(args.config, override, args.strict, not args.no_last_good)
    return check_or_run(args, found.first, lambda config, args: run(config, args, found), preflight)
