"""``synapse``: watch service registries and keep HAProxy in step."""

from __future__ import annotations

import argparse
import sys

from smartstack.cli import add_common_arguments, check_or_run
from smartstack.config_sections import SectionCache
from smartstack.malloc_tune import tune_malloc
from synapse import gc_start
from synapse.config import CONFIG_ENV, SynapseConfig, load_synapse_config, service_cache
from synapse.preflight import preflight


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="synapse", description=__doc__)
    add_common_arguments(parser, config_env=CONFIG_ENV)
    parser.add_argument("--zone", help="the zone this synapse is in (or SYNAPSE_ZONE)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # `synapse zone ...` talks to a running synapse; `synapse -c FILE` stays as it was.
    if argv and argv[0] == "zone":
        from synapse.zone_cli import main as zone_main

        return zone_main(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.config:
        parser.error(f"the config file is needed: -c FILE, or ${CONFIG_ENV}")
    gc_start.relax()  # a start builds objects that live on: few collections until it is over
    cache = service_cache()  # the daemon's SIGHUP re-reads only the services that changed
    return check_or_run(
        args,
        lambda: load_synapse_config(args.config, args.zone, args.strict, cache),
        lambda config, args: _run(config, args, cache),
        preflight,
    )


def _run(config: SynapseConfig, args: argparse.Namespace, cache: SectionCache) -> int:
    from synapse.daemon import run  # imported late: `-k` needs none of the daemon's modules

    tune_malloc(len(config.services))  # before the registry's records come in
    gc_start.freeze_loaded()
    return run(config, args, cache)


if __name__ == "__main__":
    sys.exit(main())
