"""The state file's entries as ``synapse.state_cache`` holds them: a service's servers as
one JSON text (``"name": {...}``), its servers marked left apart (``Left``), and the
helpers that stamp, bound, encode and parse them."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from synapse.selection import HELD_ORIGIN, Selection
from synapse.state_clock import is_stamp

Entries = dict[str, dict[str, dict[str, Any]]]

# Ruby's key, beside the servers of a service: the generator settings the registry gave
# (synapse/generator_config.py), so a restart during a registry outage keeps them.
GENERATOR_KEY = "watcher_config_for_generator"
YIELD_EVERY = 16  # services the writer's thread handles between GIL hand-overs
MIN_LEFT = 16  # servers marked left a service keeps however few servers it has
# A service's servers marked left: name -> (last seen, its entry as the file has it,
# '"name": {...}'). Kept apart from the servers (an update parses only those) and as text.
Left = dict[str, tuple[float, str]]


def let_the_loop_run(index: int) -> None:
    """Every YIELD_EVERY services, hand the GIL over: the writer runs in a thread, and
    the event loop would otherwise wait up to a switch interval (5 ms) for it, which a
    registry change in flight would pay (a first write of 20,000 servers holds it ~50 ms)."""
    if index % YIELD_EVERY == YIELD_EVERY - 1:
        time.sleep(0)


def current_entries(selection: Selection, old: Mapping[str, Any], left: Left, now: int) -> Entries:
    """A selection's discovered servers, stamped ``now``; a server only a partial report's
    hold keeps (HELD_ORIGIN: its registry has not said) keeps the stamp it had, so it ages
    out of the file in state_file_ttl as any server not seen (none: not cached)."""
    current: dict[str, dict[str, Any]] = {}
    for server, record in zip(selection.servers, selection.records, strict=True):
        if server.origin == "default":
            continue
        stamp: Any = now
        if server.origin.startswith(HELD_ORIGIN):
            stamp = old.get(server.name, {}).get("timestamp")
            if not is_stamp(stamp) and server.name in left:
                stamp = left[server.name][0]
            if not is_stamp(stamp):
                continue
        current[server.name] = {"timestamp": stamp, **record}
    return current  # type: ignore[return-value]


def departed(old: Mapping[str, Any], current: Mapping[str, Any]) -> Left:
    """The servers of ``old`` not among ``current``, marked left (their stamps kept)."""
    left: Left = {}
    for key, data in old.items():
        stamp = data.get("timestamp")
        if key != GENERATOR_KEY and key not in current and is_stamp(stamp):
            entry = json.dumps({**data, "left": True}, sort_keys=True)
            left[key] = (stamp, f"{json.dumps(key)}: {entry}")
    return left


def bounded(left: Left, current: Mapping[str, Any], cutoff: float) -> Left:
    """``left`` without the servers back among ``current`` or last seen before ``cutoff``,
    and at most the larger of MIN_LEFT and the servers of ``current``, the most recently
    seen (a redeploy that replaced every server keeps them all)."""
    kept = {k: v for k, v in left.items() if k not in current and v[0] >= cutoff}
    cap = max(MIN_LEFT, len(current) - (GENERATOR_KEY in current))
    if len(kept) <= cap:
        return kept
    newest = sorted(kept, key=lambda k: (kept[k][0], k), reverse=True)[:cap]
    return {k: kept[k] for k in newest}


def entry_name(key: str) -> str:
    """The name of an entry without one: Ruby writes ``"name": null`` for a nameless
    record, under its HAProxy server name (``host:port``). As a nameless ZooKeeper record
    is named after its node, it is named after its key (leading ``:`` of an IPv6 host
    left off: a name begins with a letter or digit)."""
    return key.lstrip("._:-") or key


def strip(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k != "timestamp"}


def strip_all(servers: Mapping[str, Any], keep_generator: bool = True) -> dict[str, Any]:
    return {k: strip(v) for k, v in servers.items() if keep_generator or k != GENERATOR_KEY}


def encode(service: str, servers: Mapping[str, Any], generator: Mapping[str, Any] | None) -> str:
    """A service's line of the file, ``"name": {...}`` (json's C encoder: no indent)."""
    if generator:
        servers = {**servers, GENERATOR_KEY: dict(generator)}
    return f"{json.dumps(service)}: {json.dumps(servers, sort_keys=True)}"


def line_of(text: str, left: Left | None) -> str:
    """A service's line of the file: its servers' text with those marked left joined in."""
    if not left:
        return text
    tail = ", ".join(left[key][1] for key in sorted(left)) + "}"
    return text[:-1] + tail if text.endswith("{}") else f"{text[:-1]}, {tail}"


def parse_line(service: str, line: str) -> dict[str, Any]:
    return json.loads(line[len(json.dumps(service)) + 2 :])
