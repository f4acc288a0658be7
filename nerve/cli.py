"""``nerve``: health-check local services and register them while healthy.

nerve -c FILE [-k]                       run (or only check the config with -k)
nerve maint SERVICE --reason TEXT [--for DURATION] (-c FILE | --admin URL)
nerve up SERVICE (-c FILE | --admin URL)
"""

from __future__ import annotations

import argparse
import sys

from nerve.config import NerveConfig, load_nerve_config
from nerve.preflight import preflight
from smartstack.cli import add_common_arguments, check_or_run


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
        from nerve.control import main as control_main

        return control_main(argv)
    args = build_parser().parse_args(argv)
    return check_or_run(
        args,
        lambda: load_nerve_config(args.config, args.instance_id, args.strict),
        _run,
        preflight,
    )


def _run(config: NerveConfig, args: argparse.Namespace) -> int:
    from nerve.daemon import run  # imported late: `-k` needs none of the daemon's modules

    return run(config, args)


if __name__ == "__main__":
    sys.exit(main())
