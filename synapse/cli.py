"""``synapse``: watch service registries and keep HAProxy in step."""

from __future__ import annotations

import argparse
import sys

from smartstack.cli import add_common_arguments, load_or_exit, start_logging
from synapse.config import load_synapse_config


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="synapse", description=__doc__)
    add_common_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config = load_or_exit(lambda: load_synapse_config(args.config))
    if args.check_config:
        print(f"{args.config}: ok ({len(config.services)} services)")
        return 0
    start_logging(args)
    from synapse.daemon import run

    return run(config, args)


if __name__ == "__main__":
    sys.exit(main())
