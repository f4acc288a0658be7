"""``nerve maint`` / ``nerve up``: talk to the admin API of a running nerve.

    nerve maint SERVICE --reason TEXT [--for DURATION] [--drain SECONDS]
                (-c FILE | --admin URL) [--token-file F]
    nerve up SERVICE (-c FILE | --admin URL) [--token-file F]

The admin address comes from ``--admin`` or from the ``admin`` block of the config file
(only that block is read: the rest may be mid-edit, ``instance_id`` given by ``-i``); the
bearer token from ``--token-file`` or the config's ``admin.token_file``.

The change is in force once nerve answers; when nerve could not write (or, for ``up``,
remove) the flag file in ``state_dir`` (a full or read-only disk), a ``warning:`` line on
stderr says so: nerve retries every round, and a restart before it succeeds would lose the
maintenance (or bring the ended one back). The exit status stays 0, as for synapse's zone
commands: the maintenance is in force now.

A second ``maint`` joins a maintenance already on (both reasons, the later end; the answer
says whose it joined); ``up`` ends it for everyone, and says whose it ended.

``--drain``: nerve answers once the registry has the withdrawal; consumers act on it a
moment later (their synapse's watch, then HAProxy). A deploy that stops the app right
after ``nerve maint`` fails the requests still on their way, so the command waits
SECONDS more. The wait is here, after the answer, not in nerve: the answer already comes
when the registry agrees (the drain counts from there within a local round trip), and an
admin request held open that long would outlast the client's timeout.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

from nerve.config import AdminConfig
from smartstack.admin_client import (
    EXIT_FAILED,
    AdminCallError,
    add_admin_arguments,
    admin_only,
    call,
    target,
)

COMMANDS = ("maint", "up")

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([smhd]?)")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_DRAIN = 300.0  # seconds: longer is a mistake (a deploy waiting minutes per host)


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


def parse_drain(text: str) -> float:
    """--drain: a duration as --for takes it (at most MAX_DRAIN), or 0."""
    if text.strip().lower() in ("0", "0s"):
        return 0.0
    seconds = parse_duration(text)
    if seconds > MAX_DRAIN:
        raise argparse.ArgumentTypeError(f"at most {MAX_DRAIN:g} seconds")
    return seconds


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nerve", description="control a running nerve")
    sub = parser.add_subparsers(dest="command", required=True)
    maint = sub.add_parser("maint", help="withdraw SERVICE until `nerve up` (or --for)")
    up = sub.add_parser("up", help="end SERVICE's maintenance")
    for p in (maint, up):
        p.add_argument("service")
        add_admin_arguments(p)
    maint.add_argument("--reason", required=True, help="why (shown in /status and logs)")
    maint.add_argument(
        "--for", dest="duration", type=parse_duration, help="end by itself after DURATION"
    )
    maint.add_argument(
        "--drain", type=parse_drain, default=0.0, metavar="SECONDS",
        help="once the registry has the withdrawal, wait this long before returning, so "
        "consumers' HAProxies stop sending first (e.g. 2; default 0)",
    )  # fmt: skip
    return parser


def describe(status: dict[str, Any]) -> str:
    name = status.get("service", "?")
    maint = status.get("maintenance")
    if maint:
        until = f" until {maint['until']:.0f} (unix time)" if maint.get("until") else ""
        state = f"in maintenance{until}: {maint['reason']}"
    else:
        state = "not in maintenance"
    registered = "registered" if status.get("registered") else "not registered"
    if status.get("moving_from"):
        why = status.get("reason", "its checks rising")
        registered += f" at {status['moving_from']} (address move: kept till the new one is: {why})"
    elif status.get("registered") != status.get("wanted"):
        error = (status.get("registry") or {}).get("last_error")
        registered += f" (registry write pending{': ' + error if error else ''})"
    elif not maint and not status.get("registered"):
        registered += f" ({status.get('reason', 'waiting for checks')})"
    return f"{name}: {state}; {registered}"


def other_maintenance(status: dict[str, Any]) -> str | None:
    """The line saying whose maintenance this command joined (maint) or ended too (up)."""
    name = status.get("service", "?")
    joined, ended = status.get("joined"), status.get("ended")
    if joined:
        until = f"until {joined['until']:.0f} (unix time)" if joined.get("until") else "no end"
        return (f"{name}: joined the maintenance already on ({until}): {joined['reason']}; "
                "the later end holds, `nerve up` ends both")  # fmt: skip
    if ended:
        return f"{name}: ended the maintenance: {ended['reason']}"
    return None


def not_persisted(status: dict[str, Any], command: str) -> str | None:
    """The warning when the flag file does not agree with the maintenance in force."""
    if status.get("persisted", True):
        return None
    name, error = status.get("service", "?"), status.get("persist_error", "?")
    if command == "maint":
        what = "written", "lose the maintenance"
    else:
        what = "removed", "put the service back in maintenance"
    return (f"warning: {name}: the maintenance flag file could not be {what[0]} ({error}); "
            f"nerve retries every round, a nerve restart before it succeeds would "
            f"{what[1]}")  # fmt: skip


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    base, token = target(args, admin_only(AdminConfig))
    path = f"{base}/maintenance/{urllib.parse.quote(args.service, safe='')}"
    try:
        if args.command == "maint":
            body = {"reason": args.reason, "for": args.duration}
            status = call("POST", path, body, token, "the nerve")
        else:
            status = call("DELETE", path, token=token, daemon="the nerve")
    except AdminCallError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    other = other_maintenance(status)
    if other:
        print(other)
    print(describe(status), flush=True)
    warning = not_persisted(status, args.command)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    if args.command == "maint" and args.drain:
        return drain(status, args.drain)
    return 0


def drain(
    status: dict[str, Any], seconds: float, sleep: Callable[[float], None] = time.sleep
) -> int:
    """--drain: wait ``seconds`` when the registry has the withdrawal; when it does not yet
    (the write is pending), fail at once: consumers may still send traffic for a while."""
    if status.get("registered") or status.get("wanted"):
        print("error: the withdrawal is not in the registry yet: not draining; stopping "
              "the service now would fail requests", file=sys.stderr)  # fmt: skip
        return EXIT_FAILED
    sleep(seconds)
    print(f"{status.get('service', '?')}: drained {seconds:g}s after the withdrawal")
    return 0
