"""The Docker engine's event messages, read by smartstack.docker_events (pure helpers).

Times: dockerd stamps each event with `timeNano` (its own clock) and a container's start with
`State.StartedAt` (RFC 3339, nanoseconds, UTC). Comparing the two says whether a `kill` event
was sent to the container's current run or to an earlier one (a replayed event, see `since`).
"""

from __future__ import annotations

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
