"""``synapse zone``: evacuate or restore a zone on a running synapse, through its admin API.

    synapse zone evacuate ZONE [--service S] [--force] (-c CONFIG | --admin URL) [--token-file F]
    synapse zone restore ZONE [--service S] (-c CONFIG | --admin URL) [--token-file F]

The admin address comes from the config's ``admin`` block; ``--admin`` overrides it. The
bearer token comes from ``--token-file``, else the config's ``admin.token_file``. Prints
synapse's JSON answer; exit 1 with one ``error:`` line when the call fails.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.parse

from smartstack.admin_client import (
    EXIT_FAILED,
    AdminCallError,
    add_admin_arguments,
    admin_only,
    call,
    target,
)
from synapse.config import AdminConfig
from synapse.zone_config import check_zone_name


def _zone(text: str) -> str:
    try:
        return check_zone_name(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _service(text: str) -> str:
    if not text:  # an empty --service would change every service
        raise argparse.ArgumentTypeError("empty service name (leave --service out for all)")
    return text


def build_parser() -> argparse.ArgumentParser:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(prog="synapse zone", description=__doc__, formatter_class=raw)
    sub = parser.add_subparsers(dest="action", required=True)
    for action, text in (
        ("evacuate", "keep traffic away from ZONE while another zone can serve"),
        ("restore", "let ZONE serve again"),
    ):
        p = sub.add_parser(action, help=text)
        p.add_argument("zone", type=_zone)
        p.add_argument("--service", type=_service, help="only this service (default: all)")
        if action == "evacuate":
            p.add_argument("--force", action="store_true",
                           help="also a zone no targeted service knows yet (no records, "
                           "not in zone_routing.zones); without it such a zone is refused "
                           "as a likely typo")  # fmt: skip
        add_admin_arguments(p, exclusive=False)  # --admin overrides the config's address
    return parser


def zone_url(base: str, action: str, zone: str, service: str | None, force: bool = False) -> str:
    url = f"{base}/zones/{urllib.parse.quote(zone, safe='')}/{action}"
    query = {} if service is None else {"service": service}  # ("" is refused by argparse)
    if force:
        query["force"] = "1"
    return f"{url}?{urllib.parse.urlencode(query)}" if query else url


def main(argv: list[str]) -> int:
    """``argv`` starts with ``zone`` (as ``synapse zone ...`` was typed)."""
    args = build_parser().parse_args(argv[1:])
    base, token = target(args, admin_only(AdminConfig, erb=True))  # (the file's admin block)
    url = zone_url(base, args.action, args.zone, args.service, getattr(args, "force", False))
    try:
        answer = call("POST", url, token=token, daemon="the synapse")
    except AdminCallError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(json.dumps(answer, indent=2, sort_keys=True))
    return 0
