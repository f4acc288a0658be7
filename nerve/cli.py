"""``nerve``: health-check local services and register them while healthy."""

from __future__ import annotations

import argparse
import sys

from nerve.config import load_nerve_config
from smartstack.cli import add_common_arguments, load_or_exit, start_logging


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nerve", description=__doc__)
    add_common_arguments(parser)
    parser.add_argument("-i", "--instance-id", help="override instance_id (or NERVE_INSTANCE_ID)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config = load_or_exit(lambda: load_nerve_config(args.config, args.instance_id))
    if args.check_config:
        print(f"{args.config}: ok ({len(config.services)} services)")
        return 0
    start_logging(args)
    from nerve.daemon import run

    return run(config, args)


if __name__ == "__main__":
    sys.exit(main())
