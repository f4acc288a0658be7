"""nerve: health-check local services and register them while healthy.

nerve -c FILE [-k]                       run (or only check the config with -k)
nerve maint SERVICE --reason TEXT [--for DURATION] [--drain SECONDS] (-c FILE | --admin URL)
nerve up SERVICE (-c FILE | --admin URL)
"""

from __future__ import annotations

from smartstack.early_signals import hold_sighup, hold_sigusr2

hold_sighup()  # first: a SIGHUP during the imports below (0.2-0.5 s) ended nerve
hold_sigusr2()  # (and a SIGUSR2, the restart stop: replayed once the loop runs)

import argparse
import sys
from typing import TYPE_CHECKING

from smartstack.cli import add_common_arguments, check_or_start, run_command
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
    code = run_command(argv, ("maint", "up"), "nerve.control:main")
    if code is not None:
        return code
    args = build_parser().parse_args(argv)
    return check_or_start(args, "nerve", args.instance_id, _run)


def _run(config: NerveConfig, args: argparse.Namespace, source: ConfigSource) -> int:
    from nerve.main import run  # imported late: `-k` needs none of the daemon's modules
    from smartstack.child_watch import use_pidfds
    from smartstack.malloc_tune import tune_malloc

    source.last_good.running()  # (what it could not keep, said after the checks)
    nerve_lock(config, args.config)  # one nerve per config: before a registry is touched
    use_pidfds()  # no waitpid thread per child: at a pids limit it cannot start
    tune_malloc()  # asyncio's 256 KB read buffers off the heap: it grew for good (soak)
    return run(config, args, source)


if __name__ == "__main__":
    sys.exit(main())
