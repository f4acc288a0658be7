"""synapse: watch service registries and keep HAProxy in step.

synapse -c FILE [-k]                     run (or only check the config with -k)
synapse zone evacuate|restore ZONE [--service S] (-c FILE | --admin URL)   (synapse zone -h)
"""

from __future__ import annotations

from smartstack.early_signals import hold_sighup

hold_sighup()  # first: a SIGHUP during the imports below (0.2-0.5 s) ended synapse

import argparse
import sys
from typing import TYPE_CHECKING

from smartstack.cli import add_common_arguments, check_or_start, run_command
from smartstack.instance_lock import synapse_lock
from smartstack.malloc_tune import tune_malloc_for_fleet
from synapse import gc_start

if TYPE_CHECKING:
    from synapse.config import SynapseConfig
    from synapse.config_load import ConfigSource

# Ruby's bin/synapse: the config path when -c is absent. (Not imported from synapse.config:
# which base its models get is decided after the arguments are read: synapse.config_load.)
CONFIG_ENV = "SYNAPSE_CONFIG"


def build_parser() -> argparse.ArgumentParser:
    # (raw: the usage lines of the docstring stay lines; `synapse zone` is found here)
    parser = argparse.ArgumentParser(
        prog="synapse", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_common_arguments(parser, config_env=CONFIG_ENV)
    parser.add_argument("--zone", help="the zone this synapse is in (or SYNAPSE_ZONE)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # `synapse zone ...` talks to a running synapse; `synapse -c FILE` stays as it was.
    code = run_command(argv, ("zone",), "synapse.zone_cli:main")
    if code is not None:
        return code
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.config:
        parser.error(f"the config file is needed: -c FILE, or ${CONFIG_ENV}")
    gc_start.relax()  # a start builds objects that live on: few collections until it is over
    return check_or_start(args, "synapse", args.zone, _run)


def _run(config: SynapseConfig, args: argparse.Namespace, source: ConfigSource) -> int:
    from smartstack.child_watch import use_pidfds
    from synapse.daemon import run  # imported late: `-k` needs none of the daemon's modules

    source.last_good.running()  # (what it could not keep, said after the checks)
    synapse_lock(config, args.config)  # one synapse per config: before HAProxy is touched
    tune_malloc_for_fleet(len(config.services))  # before the registry's records come in
    gc_start.freeze_loaded()
    use_pidfds()  # no waitpid thread per child: at a pids limit it cannot start
    return run(config, args, source)


if __name__ == "__main__":
    sys.exit(main())
