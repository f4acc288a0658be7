"""``synapse``: watch service registries and keep HAProxy in step."""

from __future__ import annotations

import argparse
import sys

from smartstack.cli import add_common_arguments, check_or_run
from synapse.config import SynapseConfig, load_synapse_config
from synapse.preflight import preflight


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="synapse", description=__doc__)
    add_common_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return check_or_run(
        args, lambda: load_synapse_config(args.config, args.strict), _run, preflight
    )


def _run(config: SynapseConfig, args: argparse.Namespace) -> int:
    from synapse.daemon import run  # imported late: `-k` needs none of the daemon's modules

    return run(config, args)


if __name__ == "__main__":
    sys.exit(main())
