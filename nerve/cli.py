"""``nerve``: health-check local services and register them while healthy.

nerve -c FILE [-k]                       run (or only check the config with -k)
nerve maint SERVICE --reason TEXT [--for DURATION] [--drain SECONDS] (-c FILE | --admin URL)
nerve up SERVICE (-c FILE | --admin URL)
"""

from __future__ import annotations

from smartstack.early_signals import hold_sighup, hold_sigusr2, release_sighup

hold_sighup()  # first: a SIGHUP during the imports below (0.2-0.5 s) ended nerve
hold_sigusr2()  # (and a SIGUSR2, the restart stop: replayed once the loop runs)

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smartstack.cli import add_common_arguments, check_or_run
from smartstack.instance_lock import nerve_lock

if TYPE_CHECKING:
    from nerve.config import NerveConfig
    from nerve.config_load import ConfigSource

# (Nothing here imports nerve.config: which base its models get is decided after the
# arguments are read, nerve.config_load.)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nerve",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common_arguments(parser)
    parser.add_argument("-i", "--instance-id", help="override instance_id (or NERVE_INSTANCE_ID)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # The control commands come first on the command line; `nerve -c FILE` stays as it was.
    if argv and argv[0] in ("maint", "up"):
        release_sighup()  # a command, not the daemon
        from nerve.control import main as control_main

        return control_main(argv)
    args = build_parser().parse_args(argv)
    if args.check_config:  # -k: validated here, on pydantic
        from nerve.config import load_nerve_config

        loader = lambda: load_nerve_config(args.config, args.instance_id, args.strict)  # noqa: E731
        return check_or_run(args, loader, lambda config, args: 0, _preflight)
    # The daemon: validated by a child; plain config objects here (nerve.config_load).
    from nerve.config_load import ConfigSource

    source = ConfigSource(args.config, args.instance_id, args.strict, not args.no_last_good)
    return check_or_run(
        args, source.first, lambda config, args: _run(config, args, source), _preflight
    )


def _preflight(config: Any, path: Path, full: bool) -> tuple[list[str], list[str]]:
    from nerve.preflight import preflight  # after the model base is chosen

    return preflight(config, path, full)


def _run(config: NerveConfig, args: argparse.Namespace, source: ConfigSource) -> int:
    from nerve.main import run  # imported late: `-k` needs none of the daemon's modules
    from smartstack.child_watch import use_pidfds

    source.last_good.running()  # (what it could not keep, said after the checks)
    nerve_lock(config, args.config)  # one nerve per config: before a registry is touched
    use_pidfds()  # no waitpid thread per child: at a pids limit it cannot start
    return run(config, args, source)


if __name__ == "__main__":
    sys.exit(main())
