"""The Docker engine's event messages, read by smartstack.docker_events (pure helpers).

Times: dockerd stamps each event with `timeNano` (its own clock) and a container's start with
`State.StartedAt` (RFC 3339, nanoseconds, UTC). Comparing the two says whether a `kill` event
was sent to the container's current run or to an earlier one (a replayed event, see `since`).
The stream's socket gets TCP keepalive (`keep_alive`).
"""

from __future__ import annotations

import socket
from datetime import datetime
from typing import Any


def event_time_ns(message: dict[str, Any]) -> int | None:
    """When dockerd emitted the event, in nanoseconds since the epoch (None if unsaid)."""
    raw = message.get("timeNano")  # (its `time` is in whole seconds: too coarse to compare)
    return raw if isinstance(raw, int) and raw > 0 else None


def since_param(time_ns: int) -> str:
    """The `since` of an events request that replays from `time_ns` on ("secs.nanos")."""
    return f"{time_ns // 1_000_000_000}.{time_ns % 1_000_000_000:09d}"


def started_ns(started_at: str) -> int | None:
    """'2026-01-01T00:00:00.123456789Z' -> nanoseconds since the epoch (None: not parsable,
    or Docker's zero time of a container that never started)."""
    text = started_at.strip()
    if not text.endswith("Z"):
        return None
    whole, _, fraction = text[:-1].partition(".")
    try:
        seconds = int(datetime.fromisoformat(whole + "+00:00").timestamp())
    except ValueError:
        return None
    digits = (fraction + "000000000")[:9]
    if seconds <= 0 or not digits.isdigit():
        return None
    return seconds * 1_000_000_000 + int(digits)


def sent_before_start(message: dict[str, Any], started_at: str) -> bool:
    """The event is older than the container's current start: it was about an earlier run."""
    sent, started = event_time_ns(message), started_ns(started_at)
    return sent is not None and started is not None and sent < started


# TCP keepalive on a tcp:// engine's event stream: a path that died silently (a NAT or load
# balancer entry expired, packets dropped, no RST) ends the stream after about
# IDLE + INTERVAL * COUNT seconds of silence instead of never (the stream has no timeout).
KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_COUNT = 10, 5, 3


def stream_socket(stream: Any) -> socket.socket | None:
    """The socket under a docker SDK event stream (as its CancellableStream.close finds it)."""
    try:
        fp = stream._response.raw._fp.fp
    except AttributeError:
        return None
    raw = getattr(fp, "raw", None)
    sock = getattr(raw, "sock", None) or getattr(raw, "_sock", None) or getattr(fp, "_sock", None)
    return sock if isinstance(sock, socket.socket) else None


def keep_alive(sock: socket.socket | None) -> bool:
    """Turn on TCP keepalive (a unix socket needs none); whether it was turned on."""
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return False
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in (("TCP_KEEPIDLE", KEEPALIVE_IDLE),
                          ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL),
                          ("TCP_KEEPCNT", KEEPALIVE_COUNT)):  # fmt: skip
        if hasattr(socket, option):  # (Linux; other systems keep their defaults)
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)
    return True


def labels_match(labels: dict[str, str], filters: list[str]) -> bool:
    """Docker's label filter, client-side: each of `filters` is `name` (present) or
    `name=value`. (A container event's Actor.Attributes carry its labels.)"""
    for item in filters:
        name, has_value, value = item.partition("=")
        if name not in labels or (has_value and labels[name] != value):
            return False
    return True
