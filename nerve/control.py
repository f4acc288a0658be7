"""``nerve maint`` / ``nerve up``: talk to the admin API of a running nerve.

    nerve maint SERVICE --reason TEXT [--for DURATION] (-c FILE | --admin URL)
    nerve up SERVICE (-c FILE | --admin URL)

The admin address comes from ``--admin`` or from the ``admin`` block of the config file.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from nerve.config import load_nerve_config
from smartstack.cli import load_or_exit

COMMANDS = ("maint", "up")
REQUEST_TIMEOUT = 10.0
EXIT_FAILED = 1

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([smhd]?)")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """'90', '90s', '5m', '1h30m', '2d' -> seconds."""
    compact = text.strip().lower().replace(" ", "")
    parts = _DURATION_PART.findall(compact)
    if not compact or "".join(n + u for n, u in parts) != compact:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (e.g. 90s, 10m, 1h30m)")
    seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)
    if seconds <= 0:
        raise argparse.ArgumentTypeError("the duration must be positive")
    return seconds


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nerve", description="control a running nerve")
    sub = parser.add_subparsers(dest="command", required=True)
    maint = sub.add_parser("maint", help="withdraw SERVICE until `nerve up` (or --for)")
    up = sub.add_parser("up", help="end SERVICE's maintenance")
    for p in (maint, up):
        p.add_argument("service")
        where = p.add_mutually_exclusive_group(required=True)
        where.add_argument("-c", "--config", help="the running nerve's config file")
        where.add_argument("--admin", help="admin API URL, e.g. http://127.0.0.1:1025")
    maint.add_argument("--reason", required=True, help="why (shown in /status and logs)")
    maint.add_argument(
        "--for", dest="duration", type=parse_duration, help="end by itself after DURATION"
    )
    return parser


def admin_url(args: argparse.Namespace) -> str:
    if args.admin:
        return args.admin.rstrip("/")
    config = load_or_exit(lambda: load_nerve_config(args.config))
    if config.admin.port is None:
        print(
            f"error: {args.config}: the admin API is disabled (admin.port is null)", file=sys.stderr
        )
        sys.exit(EXIT_FAILED)
    host = config.admin.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"  # bound to every address: talk to the local one
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{config.admin.port}"


def request(method: str, url: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=REQUEST_TIMEOUT) as response:
        return json.loads(response.read())


def describe(status: dict[str, Any]) -> str:
    name = status.get("service", "?")
    maint = status.get("maintenance")
    if maint:
        until = f" until {maint['until']:.0f} (unix time)" if maint.get("until") else ""
        state = f"in maintenance{until}: {maint['reason']}"
    else:
        state = "not in maintenance"
    registered = "registered" if status.get("registered") else "not registered"
    if status.get("registered") != status.get("wanted"):
        error = (status.get("registry") or {}).get("last_error")
        registered += f" (registry write pending{': ' + error if error else ''})"
    elif not maint and not status.get("registered"):
        registered += f" ({status.get('reason', 'waiting for checks')})"
    return f"{name}: {state}; {registered}"


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    base = admin_url(args)
    path = f"{base}/maintenance/{urllib.parse.quote(args.service, safe='')}"
    try:
        if args.command == "maint":
            status = request("POST", path, {"reason": args.reason, "for": args.duration})
        else:
            status = request("DELETE", path)
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace").strip()
        print(f"error: {base}: HTTP {exc.code}: {detail}", file=sys.stderr)
        return EXIT_FAILED
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        print(f"error: cannot reach the nerve admin API at {base}: {reason}", file=sys.stderr)
        return EXIT_FAILED
    print(describe(status))
    return 0
